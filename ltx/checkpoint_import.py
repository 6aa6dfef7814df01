"""PyTorch checkpoints in, ltx workdirs out: `ltx-import`, without PyTorch.

    ltx-import --config=configs/imagenet_lt_ride.py --stage=experts \\
        --checkpoint=RIDE_ImageNet_LT_ResNeXt50_3experts.pth --workdir=runs/ride_official
    python -m ltx.cli import --config=configs/imagenet_lt_ce.py:arch=resnet10 \\
        --config.model.head=linear --checkpoint=resnet10.pth --workdir=runs/resnet10_imported

The checkpoint (a `torch.save` file of the reference code or torchvision, `.safetensors` or
`.npz`; `ltx.convert`) is converted onto the model the config describes and written as an ltx
workdir: `config.json`, an orbax checkpoint at step 0, `dataset.json` (the training counts) and
`import_report.json` (what was copied, what was skipped and why). The dataset need not be on
this machine: `--class_counts` gives the training counts (the official training list file, a
JSON list, or 'uniform' to predict only), and `ltx-predict` then reads the workdir without it:

    ltx-import --config=configs/imagenet_lt_ce.py --class_counts=ImageNet_LT_train.txt \
        --checkpoint=ce_resnet50.pth --workdir=runs/ce_official
    ltx-predict runs/ce_official my_photos/
 `ltx-eval`, `ltx-predict`, `ltx.stats` and `model.init_checkpoint`
then use it as if ltx had trained it, and `ltx-train` with the same config fine-tunes it (it
resumes from step 0). The conversion is strict: every ltx variable must be filled (a classifier
of another shape is an error here; `model.init_checkpoint` keeps it at its initial value
instead). A multi-stage config is imported into one of its stages (`--stage`, default the last),
written as a single-run workdir of that stage's config.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from ltx import (checkpointing, config_check, config_lib, files, parts as parts_lib, steps,
                 trainer, workdirs)
from ltx.convert import arrays, layouts
from ltx.data import datasets

REPORT_FILE = "import_report.json"


def _stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
    staged = config_lib.stage_configs(config)
    if not staged:
        if stage:
            raise ValueError(f"--stage={stage!r}, but the config has no stages")
        return config
    names = [name for name, _, _ in staged]
    stage = stage or names[-1]
    if stage not in names:
        raise ValueError(f"--stage={stage!r}; expected one of the config's stages {names}")
    return dict((name, c) for name, c, _ in staged)[stage]


def read_class_counts(given: str, config: ml_collections.ConfigDict):
    """The training counts int [C] that `ltx-import --class_counts` gives: '' -> None (read
    from the dataset), 'uniform' -> ones, a '.json' file -> its list of C integers, any other
    file -> a list file of 'path label' lines (the official training list) counted per label.
    ValueError names a file whose counts do not fit the config's C classes."""
    if not given:
        return None
    num_classes = datasets.spec(_stage_config(config, "").data)[0]
    if given == "uniform":
        return np.ones(num_classes, np.int64)
    if not files.isfile(given):
        raise FileNotFoundError(f"--class_counts={given!r} is neither 'uniform' nor a file")
    if given.endswith(".json"):
        counts = files.read_json(given)
        if (not isinstance(counts, list) or len(counts) != num_classes
                or not all(isinstance(n, int) and n >= 0 for n in counts)):
            raise ValueError(f"--class_counts={given!r}: expected a JSON list of {num_classes} "
                             "non-negative integers")
        return np.asarray(counts, np.int64)
    labels = []
    for number, line in enumerate(files.read_text(given).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or not (
                0 <= int(fields[1]) < num_classes):
            raise ValueError(f"--class_counts={given!r} line {number}: {line.strip()!r}; "
                             f"expected 'path label' with a label in [0, {num_classes})")
        labels.append(int(fields[1]))
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def import_checkpoint(checkpoint: str, config: ml_collections.ConfigDict, workdir: str, *,
                      stage: str = "", class_counts=None) -> dict[str, Any]:
    """Converts `checkpoint` onto `config`'s model and writes `workdir`; returns the report.

    `class_counts` (int [C], the training images per class) builds the method and model without
    reading the dataset, so no image or list of it is needed here; None reads them from the
    dataset's training list. Either way `<workdir>/dataset.json` records them, and `ltx-predict`
    restores the workdir from it without the dataset.

    Raises FileExistsError when `workdir` already holds checkpoints (nothing is overwritten),
    ValueError when the checkpoint does not fit the model (the first mismatch named) and the
    errors of `ltx.convert.arrays.load_state_dict` for a damaged or unsafe file.
    """
    config = _stage_config(config, stage)
    if files.isdir(files.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir} already holds checkpoints; import into a new --workdir")
    state_dict = arrays.load_state_dict(checkpoint)  # Before any model is built: fail fast.
    reads_data = class_counts is None
    config_check.check(config, data=reads_data)
    parts = (parts_lib.build(config) if reads_data
             else parts_lib.build_without_images(config, class_counts))
    plan, mesh = parts_lib.make_plan(config, parts), steps.make_mesh()
    state = trainer.initial_state(config, parts, plan, mesh, pretrained=False)
    variables, report = layouts.convert(
        state_dict.arrays, {"params": jax.device_get(state.params),
                            "batch_stats": jax.device_get(state.batch_stats)})
    if report.kept:
        raise ValueError(f"{checkpoint} leaves {len(report.kept)} ltx variables unfilled "
                         f"({', '.join(report.kept[:6])}); is the config's model the "
                         "checkpoint's? (use model.init_checkpoint to start a run from a "
                         "partial match)")
    state = steps.with_variables(state, variables["params"], variables.get("batch_stats", {}),
                                 plan.tx, mesh)
    summary = {"checkpoint": files.absolute(checkpoint), "container": state_dict.container,
               "non_tensor_entries": state_dict.skipped, "copied": report.copied,
               "broadcast": report.broadcast, "skipped": report.skipped,
               "summary": report.summary()}
    if jax.process_index() == 0:
        workdirs.write_config(workdir, config)
        parts_lib.write_dataset_record(workdir, parts.dataset)
    checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
    try:
        # No data state: a training run from this step-0 checkpoint starts its data afresh.
        checkpointer.save(0, state, {}, {"fingerprint": parts_lib.fingerprint(config, parts),
                                                 "seed": config.seed,
                                                 "imported_from": summary["checkpoint"]},
                          force=True)
    finally:
        checkpointer.close()
    if jax.process_index() == 0:
        files.write_json(files.join(workdir, REPORT_FILE), summary, sort_keys=False)
    return summary
