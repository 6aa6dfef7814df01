"""PyTorch checkpoints in, ltx workdirs out: `ltx-import`, without PyTorch.

    ltx-import --config=configs/imagenet_lt_ride.py --stage=experts \\
        --checkpoint=RIDE_ImageNet_LT_ResNeXt50_3experts.pth --workdir=runs/ride_official
    python -m ltx.cli import --config=configs/imagenet_lt_ce.py:arch=resnet10 \\
        --config.model.head=linear --checkpoint=resnet10.pth --workdir=runs/resnet10_imported

The checkpoint (a `torch.save` file of the reference code or torchvision, `.safetensors` or
`.npz`; `ltx.convert`) is converted onto the model the config describes and written as an ltx
workdir: `config.json`, an orbax checkpoint at step 0 and `import_report.json` (what was copied,
what was skipped and why). `ltx-eval`, `ltx-predict`, `ltx.stats` and `model.init_checkpoint`
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

from ltx import (checkpointing, config_check, config_lib, files, parts as parts_lib, steps,
                 trainer, workdirs)
from ltx.convert import arrays, layouts
from ltx.data import pipeline

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


def import_checkpoint(checkpoint: str, config: ml_collections.ConfigDict, workdir: str, *,
                      stage: str = "") -> dict[str, Any]:
    """Converts `checkpoint` onto `config`'s model and writes `workdir`; returns the report.

    Raises FileExistsError when `workdir` already holds checkpoints (nothing is overwritten),
    ValueError when the checkpoint does not fit the model (the first mismatch named) and the
    errors of `ltx.convert.arrays.load_state_dict` for a damaged or unsafe file.
    """
    config = _stage_config(config, stage)
    if files.isdir(files.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir} already holds checkpoints; import into a new --workdir")
    state_dict = arrays.load_state_dict(checkpoint)  # Before any model is built: fail fast.
    config_check.check(config)
    parts = parts_lib.build(config)
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
    data_state = pipeline.train_iterator(trainer.train_data(config, parts.dataset, plan.epochs),
                                         num_workers=0).get_state()
    summary = {"checkpoint": files.absolute(checkpoint), "container": state_dict.container,
               "non_tensor_entries": state_dict.skipped, "copied": report.copied,
               "broadcast": report.broadcast, "skipped": report.skipped,
               "summary": report.summary()}
    if jax.process_index() == 0:
        workdirs.write_config(workdir, config)
    checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
    try:
        checkpointer.save(0, state, data_state, {"fingerprint": parts_lib.fingerprint(config, parts),
                                                 "seed": config.seed,
                                                 "imported_from": summary["checkpoint"]},
                          force=True)
    finally:
        checkpointer.close()
    if jax.process_index() == 0:
        files.write_json(files.join(workdir, REPORT_FILE), summary, sort_keys=False)
    return summary
