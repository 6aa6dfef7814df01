"""Reading finished workdirs: their config, their runs and the predictor they stand for.

A workdir is what `ltx.train` writes: `config.json`, `checkpoints/`, `metrics.jsonl` and
`final_metrics.json`; a multi-stage config (`config.stage_order`) writes one such run per stage
in `<workdir>/<stage>` and its own `config.json` and `final_metrics.json` on top.

`final_predictor(workdir)` gives the method's final model, whatever the layout: a single run's
model, the last stage's model (RIDE's router cascade, ALA + MoE's distilled model), or what the
method's home builds from all its stages (`final_predictor` hook: the fused class-balanced
experts). `ltx-eval`, `ltx-predict` and `ltx.stats` use it, so they work on every workdir.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import config_lib, files, methods, trainer
from ltx.outputs import Outputs

CONFIG_FILE = "config.json"
FINAL_METRICS_FILE = "final_metrics.json"


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict a run wrote to `<workdir>/config.json` (JSON lists back to tuples)."""
    path = files.join(workdir, CONFIG_FILE)
    if not files.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; is {workdir!r} a training workdir?")
    raw = files.read_json(path)

    def tuples(x):
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(tuples(v) for v in x)
        return x

    return ml_collections.ConfigDict(tuples(raw))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    files.write_text(files.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def is_finished(workdir: str) -> bool:
    return files.isfile(files.join(workdir, FINAL_METRICS_FILE))


def read_final_metrics(workdir: str) -> dict[str, Any]:
    return files.read_json(files.join(workdir, FINAL_METRICS_FILE))


def write_final_metrics(workdir: str, final: dict[str, Any]) -> None:
    files.write_json(files.join(workdir, FINAL_METRICS_FILE), final)


def restore_run(workdir: str, step: int | None = None,
                config: ml_collections.ConfigDict | None = None) -> trainer.Run:
    """The `Run` of a single-run workdir (or one stage's directory) with its checkpoint in
    `run.state`. A distilling run restores without its teacher (it is not needed to predict)."""
    config = load_config(workdir) if config is None else config
    if config.get("stage_order"):
        raise ValueError(f"{workdir} holds a multi-stage run ({tuple(config.stage_order)}); "
                         "restore one stage's directory, or use final_predictor")
    run = trainer.Run(config, workdir)
    run.restore(step)
    return run


def restore_stages(workdir: str, config: ml_collections.ConfigDict | None = None,
                   step: int | None = None) -> dict[str, trainer.Run]:
    """{stage name: restored Run} of a multi-stage workdir; `step` applies to the last stage."""
    config = load_config(workdir) if config is None else config
    staged = config_lib.stage_configs(config)
    runs = {}
    for index, (name, stage_config, _) in enumerate(staged):
        runs[name] = restore_run(files.join(workdir, name),
                                 step if index == len(staged) - 1 else None, stage_config)
    return runs


class RunPredictor:
    """The prediction interface of a finished workdir, here for one trained run.

    Attributes:
      config: the run's config (shot convention, bins, data, method).
      dataset: the dataset it predicts (class counts, splits, input normalisation).
      method: its `ltx.methods.Method` (name, experts, prior correction, evaluators).
      step: the checkpoint step.
      models: [(name, Linen module)] of the models it runs, for `ltx.stats`.
    """

    def __init__(self, run: trainer.Run):
        self.run = run
        self.config, self.dataset, self.method = run.config, run.dataset, run.method
        self.step = int(run.state.step)
        self.models = [("model", run.model)]

    def predict(self, split="test") -> tuple[Outputs, np.ndarray, np.ndarray]:
        """(outputs of host arrays, ensemble logits [N, C], labels [N]) on 'test', 'val' or a
        `Split`."""
        outputs, labels = self.run.predict(self.run.state, split)
        return outputs, self.run.aggregate(self.run.state, outputs), labels

    def predict_images(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(expert logits [E, N, C], ensemble logits [N, C]) of normalised inputs [N, H, W, C]."""
        outputs = self.run.forward(self.run.state, inputs)
        return np.asarray(outputs.logits), self.run.aggregate(self.run.state, outputs)

    def correct_prior(self, logits: np.ndarray, prior) -> np.ndarray:
        """Logits for a known test prior, or ValueError when the method has no correction."""
        if self.method.correct_prior is None:
            raise ValueError(f"method {self.method.name!r} has no test-prior correction")
        return np.asarray(self.method.correct_prior(jnp.asarray(logits), prior), np.float32)

    def extra_reports(self) -> dict[str, Any]:
        """Method-specific sections for the evaluation report (none for a plain run)."""
        return {}


def final_predictor(workdir: str, step: int | None = None,
                    config: ml_collections.ConfigDict | None = None):
    """The predictor of a finished workdir (see the module docstring)."""
    config = load_config(workdir) if config is None else config
    if not config.get("stage_order"):
        return RunPredictor(restore_run(workdir, step, config))
    runs = restore_stages(workdir, config, step)
    build = methods.hook(config.method.name, "final_predictor")
    if build is not None:
        return build(config, runs)
    return RunPredictor(runs[list(runs)[-1]])
