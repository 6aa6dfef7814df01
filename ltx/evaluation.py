"""Evaluation of a trained state: expert logits on a split, then the long-tail metric set.

`predict_split` runs the jitted model over every record of a split (padded batches, sharded over
the mesh) and returns host arrays; `metric_report` turns them into the numbers a long-tail paper
reports: top-1 over all classes and the many/medium/few groups (mean of per-class accuracies),
NLL, ECE and MCE (15 equal-width bins), Brier, and each expert's accuracy. Accuracies and
calibration errors are in percent.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ltx import metrics
from ltx.outputs import Outputs, model_outputs
from ltx.data import pipeline, splits


def predict_split(eval_step: Callable, state, split: splits.Split, *, batch_size: int, mean,
                  std, to_global: Callable, sharding: pipeline.Sharding = pipeline.Sharding(),
                  transform: pipeline.EvalTransform | None = None
                  ) -> tuple[Outputs, np.ndarray]:
    """The model's outputs on every record of `split`, in split order.

    Args:
      eval_step: jitted `(state, batch) -> (outputs, mask [B], index [B])`, outputs replicated:
        expert logits [E, B, C] or {'logits': [E, B, C], 'router': [B, K]}.
      state: the train state.
      split: records to evaluate.
      batch_size: global eval batch size.
      mean, std: input normalisation.
      to_global: turns a process-local batch into global sharded arrays.
      sharding: this process's slice; the step's outputs are replicated, so every host gets the
        whole split back.
      transform: the dataset's `eval_transform` (None for fixed-size records).

    Returns:
      (`Outputs` of host arrays: logits float32 [E, N, C], router [N, K] or None;
      labels int [N]).
    """
    logit_chunks, router_chunks, positions = [], [], []
    for batch in pipeline.eval_batches(split, global_batch_size=batch_size, mean=mean, std=std,
                                       transform=transform, sharding=sharding):
        outputs, mask, index = eval_step(state, to_global(batch))
        outputs = model_outputs(outputs)
        mask, index = np.asarray(mask), np.asarray(index)
        logit_chunks.append(np.asarray(outputs.logits, np.float32)[:, mask])
        if outputs.router is not None:
            router_chunks.append(np.asarray(outputs.router, np.float32)[mask])
        positions.append(index[mask])
    order = np.argsort(np.concatenate(positions), kind="stable")
    router = np.concatenate(router_chunks)[order] if router_chunks else None
    return (Outputs(np.concatenate(logit_chunks, axis=1)[:, order], router),
            np.asarray(split.labels))


def metric_report(expert_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                  class_counts: np.ndarray, *, shot_convention: str = "ride",
                  num_bins: int = 15) -> dict[str, float]:
    """The metric set of one evaluation.

    Args:
      expert_logits: float [E, N, C] per-expert logits.
      logits: float [N, C] the ensemble's evaluated logits (aggregated, maybe prior-corrected).
      labels: int [N].
      class_counts: int [C] training counts (define the shot groups).

    Returns:
      top1_{all,many,medium,few}, top1_samples (plain sample accuracy), nll, ece, mce, brier and
      top1_expert{k}; percentages except nll and brier. Groups with no classes give NaN
      (null in the JSON files, `UNDEFINED` in the tables).
    """
    predictions = logits.argmax(-1)
    groups = metrics.shot_group_accuracy(predictions, labels, class_counts,
                                         convention=shot_convention)
    report = {f"top1_{name}": 100.0 * float(value) for name, value in groups.items()}
    report["top1_samples"] = 100.0 * float(np.mean(predictions == labels))
    report["nll"] = float(metrics.negative_log_likelihood(logits, labels))
    report["ece"] = 100.0 * float(metrics.expected_calibration_error(logits, labels,
                                                                      num_bins=num_bins))
    report["mce"] = 100.0 * float(metrics.max_calibration_error(logits, labels,
                                                                 num_bins=num_bins))
    report["brier"] = float(metrics.brier_score(logits, labels))
    for k in range(expert_logits.shape[0]):
        expert_groups = metrics.shot_group_accuracy(expert_logits[k].argmax(-1), labels,
                                                    class_counts, convention=shot_convention)
        report[f"top1_expert{k}"] = 100.0 * float(expert_groups["all"])
    return report


UNDEFINED = "-"  # How every ltx table shows an undefined metric (null in JSON, NaN in memory).


def format_value(value, digits: int = 2) -> str:
    """`value` with `digits` decimals, or UNDEFINED for None or NaN (e.g. the accuracy of a shot
    group with no class): the mark ltx-eval's report.md and ltx-sweep's tables show too."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return UNDEFINED
    return f"{value:.{digits}f}"


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table: one row per split, the headline columns (metrics as
    `metric_report` returns them, or as final_metrics.json stores them, None for undefined)."""
    columns = ["top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce"]
    header = f"{'split':<8}" + "".join(f"{c:>12}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, report in rows.items():
        lines.append(f"{name:<8}" + "".join(f"{format_value(report[c]):>12}" for c in columns))
    experts = [k for k in next(iter(rows.values())) if k.startswith("top1_expert")]
    if len(experts) > 1:
        for name, report in rows.items():
            lines.append(f"{name} per-expert top1_all: "
                         + ", ".join(format_value(report[k]) for k in experts))
    return "\n".join(lines)

