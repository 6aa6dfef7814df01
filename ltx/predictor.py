"""A trained model as a predictor: restore its variables, apply it, aggregate, correct the prior.

`Predictor` is what the training loop evaluates with, and what `ltx-eval`, `ltx-predict`,
`ltx.stats`, `ltx-import`, distillation teachers and the class-balanced experts' fusion read
a finished run through (`ltx.workdirs.final_predictor` picks the one a workdir stands for).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import checkpointing, evaluation, files, methods, parts as parts_lib, steps
from ltx.data import pipeline
from ltx.outputs import Outputs, model_outputs


@dataclasses.dataclass
class Predictor:
    """One trained model of one config.

    Attributes:
      config: the run's config (shot convention, bins, data, method).
      dataset: the dataset it predicts (class counts, splits, input normalisation).
      method: its `ltx.methods.Method` (name, experts, aggregation, prior correction).
      model: the Linen module.
      variables: {'params', 'batch_stats'}, replicated over `mesh`.
      step: the training step the variables are from.
      mesh: the devices it runs on (default: all).
      eval_step: the jitted `ltx.steps.make_eval_step` (built once, shared by `with_variables`
        copies so periodic evaluation compiles once).
    """

    config: ml_collections.ConfigDict
    dataset: Any
    method: Any
    model: Any
    variables: Any
    step: int
    mesh: Any = None
    eval_step: Any = None

    def __post_init__(self):
        if self.mesh is None:
            self.mesh = steps.make_mesh()
        if self.eval_step is None:
            self.eval_step = steps.make_eval_step(self.model, self.mesh)
        self._forward = None

    @classmethod
    def restore(cls, workdir: str, config: ml_collections.ConfigDict, step: int | None = None,
                parts: parts_lib.Parts | None = None) -> "Predictor":
        """The model of `config` from its single-run workdir (or a stage's directory) at
        checkpoint `step` (default: the newest); `parts` saves building them again.

        Raises FileNotFoundError without a checkpoint, `checkpointing.CheckpointMismatchError`
        when the checkpoint is another model's and `CheckpointDamagedError` (naming the other
        steps kept) when it cannot be read.
        """
        if not files.isdir(files.join(workdir, "checkpoints")):
            raise FileNotFoundError(f"no checkpoints/ directory in {workdir}")
        parts = parts_lib.build(config) if parts is None else parts
        mesh = steps.make_mesh()
        template = steps.create_train_state(
            parts_lib.init_key(config), parts.model, parts_lib.make_plan(config, parts).tx,
            parts.dataset.image_shape, mesh)
        checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
        try:
            state, _, _ = checkpointer.restore(
                template, {"fingerprint": parts_lib.fingerprint(config, parts)}, step=step)
        except checkpointing.CheckpointDamagedError as err:
            chosen = step or checkpointer.latest_step()
            others = [s for s in checkpointer.all_steps() if s != chosen]
            raise checkpointing.CheckpointDamagedError(
                f"{err}. " + (f"Other checkpoints: steps {others} (pass --step=N to use one; "
                              "rerunning the training command resumes from the newest intact "
                              "one)" if others else "No other checkpoint is kept.")) from err
        finally:
            checkpointer.close()
        return cls(config, parts.dataset, parts.method, parts.model,
                   {"params": state.params, "batch_stats": state.batch_stats},
                   int(state.step), mesh)

    def with_variables(self, variables, step: int) -> "Predictor":
        """This predictor with other variables (same model, compiled steps shared)."""
        copy = dataclasses.replace(self, variables=variables, step=step)
        copy._forward = self._forward
        return copy

    @property
    def models(self) -> list[tuple[str, Any]]:
        """[(name, Linen module)] of the models it runs, for `ltx.stats`."""
        return [("model", self.model)]

    def outputs(self, split="test") -> tuple[Outputs, np.ndarray]:
        """(outputs, labels [N]) on 'test', 'val' or a `Split`: `Outputs` of host arrays,
        expert logits float32 [E, N, C] and, for routed models, router [N, K]."""
        if isinstance(split, str):
            name, split = split, getattr(self.dataset, split)
            if split is None:
                raise ValueError(f"dataset {self.dataset.name} has no {name!r} split")
        return evaluation.predict_split(
            self.eval_step, self.variables, split, batch_size=self.config.eval.batch_size,
            mean=self.dataset.mean, std=self.dataset.std,
            to_global=steps.make_to_global(self.mesh),
            sharding=pipeline.Sharding(jax.process_index(), jax.process_count()),
            transform=self.dataset.eval_transform)

    def aggregate(self, outputs: Outputs) -> np.ndarray:
        """The ensemble's logits [N, C] of `outputs`, float32."""
        outputs = jax.tree.map(jnp.asarray, outputs)
        return np.asarray(self.method.aggregate(outputs, jax.device_get(self.variables["params"])),
                          np.float32)

    def predict(self, split="test") -> tuple[Outputs, np.ndarray, np.ndarray]:
        """(outputs of host arrays, ensemble logits [N, C], labels [N]) on 'test', 'val' or a
        `Split`."""
        outputs, labels = self.outputs(split)
        return outputs, self.aggregate(outputs), labels

    def forward(self, images) -> Outputs:
        """`Outputs` (host float32 arrays) of the model on normalised images [N, H, W, C]."""
        if self._forward is None:
            model = self.model

            def forward(variables, images):
                return jax.tree.map(lambda x: x.astype(jnp.float32),
                                    model.apply(variables, images, train=False))

            self._forward = jax.jit(forward)
        raw = self._forward(self.variables, jnp.asarray(images, jnp.float32))
        return model_outputs(jax.tree.map(np.asarray, raw))

    def predict_images(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(expert logits [E, N, C], ensemble logits [N, C]) of normalised inputs [N, H, W, C]."""
        outputs = self.forward(inputs)
        return np.asarray(outputs.logits), self.aggregate(outputs)

    def correct_prior(self, logits: np.ndarray, prior) -> np.ndarray:
        """Logits [N, C] for a known test prior [C], or ValueError when the method has none."""
        if self.method.correct_prior is None:
            raise ValueError(f"method {self.method.name!r} has no test-prior correction")
        return np.asarray(self.method.correct_prior(jnp.asarray(logits), prior), np.float32)

    def evaluate(self, split="test") -> dict[str, float]:
        """The metric report on 'test' or 'val' (`evaluation.metric_report`), with the numbers
        of the configured evaluators that have `metrics` and apply to the method
        (`ltx.evaluators.Evaluator`); with `eval.posthoc_test_prior`, BalPoE's oracle
        correction by the split's empirical class frequencies first."""
        outputs, logits, labels = self.predict(split)
        if self.config.eval.posthoc_test_prior:
            if self.method.correct_prior is None:
                raise ValueError(f"eval.posthoc_test_prior=True, but method "
                                 f"{self.method.name!r} has no test-prior correction")
            test_prior = np.bincount(labels, minlength=self.dataset.num_classes) / len(labels)
            logits = self.correct_prior(logits, test_prior)
        report = evaluation.metric_report(
            outputs.logits, logits, labels, self.dataset.class_counts,
            shot_convention=self.config.eval.shot_convention, num_bins=self.config.eval.num_bins)
        for evaluator, settings in methods.applicable_evaluators(
                self.method, methods.configured_evaluators(self.config)).values():
            if evaluator.metrics is not None:
                report.update(evaluator.metrics(outputs, labels, self.dataset, self.config,
                                                **settings))
        return report

