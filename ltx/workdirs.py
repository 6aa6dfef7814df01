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

import ml_collections

from ltx import config_lib, files, methods, parts as parts_lib
from ltx.predictor import Predictor

CONFIG_FILE = "config.json"
FINAL_METRICS_FILE = "final_metrics.json"


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict a run wrote to `<workdir>/config.json` (JSON lists back to tuples)."""
    path = files.join(workdir, CONFIG_FILE)
    if not files.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; is {workdir!r} a training workdir?")
    return config_lib.from_json(files.read_json(path))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    files.write_text(files.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def is_finished(workdir: str) -> bool:
    return files.isfile(files.join(workdir, FINAL_METRICS_FILE))


def read_final_metrics(workdir: str) -> dict[str, Any]:
    return files.read_json(files.join(workdir, FINAL_METRICS_FILE))


def write_final_metrics(workdir: str, final: dict[str, Any]) -> None:
    files.write_json(files.join(workdir, FINAL_METRICS_FILE), final)


def restore_run(workdir: str, step: int | None = None,
                config: ml_collections.ConfigDict | None = None, *,
                images: bool = True) -> Predictor:
    """The `Predictor` of a single-run workdir (or one stage's directory) at checkpoint `step`
    (default: the newest). A distilling run restores without its teacher (it is not needed to
    predict). `images=False` restores it without reading its dataset where the workdir records
    its training counts (`dataset.json`) and the method needs no view of the data: the
    predictor then has no split, only what predicting images of one's own needs."""
    config = load_config(workdir) if config is None else config
    if config.get("stage_order"):
        raise ValueError(f"{workdir} holds a multi-stage run ({tuple(config.stage_order)}); "
                         "restore one stage's directory, or use final_predictor")
    parts = None
    counts = None if images else parts_lib.recorded_class_counts(workdir)
    if counts is not None and methods.hook(config.method.name, "dataset_view") is None:
        parts = parts_lib.build_without_images(config, counts)
    return Predictor.restore(workdir, config, step, parts)


def restore_stages(workdir: str, config: ml_collections.ConfigDict | None = None,
                   step: int | None = None, *, images: bool = True) -> dict[str, Predictor]:
    """{stage name: restored Predictor} of a multi-stage workdir; `step` applies to the last
    stage (`images` as for `restore_run`)."""
    config = load_config(workdir) if config is None else config
    staged = config_lib.stage_configs(config)
    runs = {}
    for index, (name, stage_config, _) in enumerate(staged):
        runs[name] = restore_run(files.join(workdir, name),
                                 step if index == len(staged) - 1 else None, stage_config,
                                 images=images)
    return runs


def final_predictor(workdir: str, step: int | None = None,
                    config: ml_collections.ConfigDict | None = None, *, images: bool = True):
    """The predictor of a finished workdir (see the module docstring); `images=False` as for
    `restore_run` (`ltx-predict`, which predicts images of one's own)."""
    config = load_config(workdir) if config is None else config
    if not config.get("stage_order"):
        return restore_run(workdir, step, config, images=images)
    runs = restore_stages(workdir, config, step, images=images)
    build = methods.hook(config.method.name, "final_predictor")
    if build is not None:
        return build(config, runs)
    return runs[list(runs)[-1]]
