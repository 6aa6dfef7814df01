"""Images per second of ltx's train step on the devices at hand: the full step (input included)
and the step on prepared data, per layout x dtype x device count.

Layouts (the models and losses of the configs named, on synthetic long-tailed data):
  resnet32x1        configs/cifar100_lt_ce.py: ResNet-32, one expert, cross-entropy
  resnet32x3-vmap   configs/cifar100_lt_balpoe.py: 3 experts, batched ('vmap')
  resnet32x3-scan   the same, experts one after another ('scan', the CPU default)
  resnet50x3        configs/imagenet_lt_balpoe.py: ResNet-50, 3 experts, 224x224, 1000 classes
dtypes: float32 and bfloat16 (`config.model.dtype`: bfloat16 convolutions, float32 parameters,
BatchNorm statistics, logits and losses). Devices: 1, 2, 4, ... up to all of them; the batch is
`--per-device-batch` x devices (weak scaling), sharded over a one-axis mesh as `ltx.steps`
does.

- full: the host makes the index batch (`pipeline.train_index_dataset`), the step gathers the
  uint8 images from the device and augments them there (`data.augment.on_device`: pad-4 crop +
  flip + normalisation; for ResNet-50 the same on 224x224 images stands in for the host's
  random resized crop, which list-file datasets decode on the host);
- prepared: the same step on one normalised batch already on the devices (no input at all).
Each number is the batch over the median step time of `--steps` steps after 2 warm-up steps
(which include compilation), every step waited for.

    python experiments/benchmark_accelerator.py                      # everything, all devices
    python experiments/benchmark_accelerator.py --layouts resnet32x3-vmap --dtypes bfloat16
    python experiments/benchmark_accelerator.py --tiny               # seconds, on CPU (the test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
LAYOUTS = {
    "resnet32x1": ("cifar100_lt_ce.py", "", "auto"),
    "resnet32x3-vmap": ("cifar100_lt_balpoe.py", "", "vmap"),
    "resnet32x3-scan": ("cifar100_lt_balpoe.py", "", "scan"),
    "resnet50x3": ("imagenet_lt_balpoe.py", "arch=resnet50", "auto"),
}
WARMUP = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--devices", default="", help="Comma-separated device counts (default: "
                   "1, 2, 4, ... and all).")
    p.add_argument("--per-device-batch", type=int, default=0,
                   help="Default: 128 (ResNet-32), 64 (ResNet-50); 4 with --tiny.")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tiny", action="store_true",
                   help="Quarter-width one-block trunks on 32x32 images, 2 steps: a smoke run.")
    args = p.parse_args(argv)
    unknown = set(args.layouts.split(",")) - set(LAYOUTS)
    if unknown:
        p.error(f"--layouts {sorted(unknown)}: expected some of {sorted(LAYOUTS)}")
    if set(args.dtypes.split(",")) - {"float32", "bfloat16"}:
        p.error(f"--dtypes={args.dtypes!r}: expected float32 and/or bfloat16")
    if args.steps < 1:
        p.error(f"--steps={args.steps}: expected >= 1")
    return args


def device_counts(spec: str, available: int) -> list[int]:
    if spec:
        counts = [int(x) for x in spec.split(",")]
        if any(c < 1 or c > available for c in counts):
            raise SystemExit(f"--devices={spec}: expected counts in 1..{available}")
        return counts
    counts, n = [], 1
    while n < available:
        counts.append(n)
        n *= 2
    return counts + [available]


def build(layout: str, dtype: str, tiny: bool):
    """(config, model, method, image_shape, num_classes) of a layout."""
    from ltx import config_lib, methods, models
    from ltx.data import long_tail

    name, arg, strategy = LAYOUTS[layout]
    config = config_lib.load_config_file(os.path.join(ROOT, "configs", name), arg)
    config.model.dtype = dtype
    config.model.expert_strategy = strategy
    size = 224 if layout == "resnet50x3" else 32
    if tiny:
        size = 32
        if config.model.name == "resnet32":
            config.model.widths, config.model.blocks_per_stage = (4, 8, 16), 1
        else:
            config.model.name, config.model.widths = "resnet10", (8, 16, 32, 64)
    num_classes = 1000 if layout == "resnet50x3" else 100
    counts = long_tail.long_tail_counts(500, num_classes, 100.0)
    method = methods.build(config.method, counts)
    model = method.model(models.build(config.model, num_classes=num_classes,
                                      num_experts=method.num_experts))
    return config, model, method, (size, size, 3), num_classes


def measure(step, state, make_batch, steps: int, rng, teacher=None):
    import jax
    times = []
    for _ in range(WARMUP + steps):
        batch = make_batch()
        start = time.perf_counter()
        state, metrics = step(state, batch, rng, teacher)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    loss = float(metrics["loss_sum"]) / max(float(metrics["count"]), 1.0)
    if loss != loss:
        raise FloatingPointError("non-finite loss")
    return state, statistics.median(times[WARMUP:])


def run(layout, dtype, devices, args) -> tuple[float, float, int]:
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from ltx import optim, steps
    from ltx.data import augment, device_augment, pipeline, splits

    config, model, method, shape, num_classes = build(layout, dtype, args.tiny)
    per_device = args.per_device_batch or (4 if args.tiny else 64 if layout == "resnet50x3"
                                           else 128)
    batch = per_device * devices
    mesh = steps.make_mesh(jax.devices()[:devices])
    schedule = optim.learning_rate_schedule(config.schedule, base_lr=0.1,
                                            num_epochs=config.num_epochs, steps_per_epoch=10)
    tx = optim.make_optimizer(config.optimizer, schedule)
    rng = np.random.default_rng(0)
    num_images = max(4 * batch, 256)
    images = rng.integers(0, 256, size=(num_images, *shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=num_images)
    split = splits.Split(splits.ArraySource(images, labels), np.arange(num_images), labels)
    key = jax.random.key(0)

    # Full: index batches from the host, augmentation in the step.
    augment_fn = device_augment.make_batch_augment(
        {"kind": "cifar", "crop_padding": 4, "flip": True}, mean=augment.IMAGENET_MEAN,
        std=augment.IMAGENET_STD)
    step = steps.make_train_step(model, method, tx, schedule, mesh, batch_augment=augment_fn)
    state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx, shape, mesh)
    source = jax.device_put(images, NamedSharding(mesh, P()))
    iterator = pipeline.train_iterator(pipeline.train_index_dataset(
        split, global_batch_size=batch, seed=0))
    to_global = steps.make_to_global(mesh)

    def index_batch():
        return dict(to_global(next(iterator)), source=source)

    state, full = measure(step, state, index_batch, args.steps, key)

    # Prepared: one normalised batch already on the devices.
    prepared_step = steps.make_train_step(model, method, tx, schedule, mesh)
    prepared = to_global({"image": augment.normalize(images[:batch], augment.IMAGENET_MEAN,
                                                     augment.IMAGENET_STD),
                          "label": labels[:batch].astype(np.int32),
                          "mask": np.ones(batch, bool)})
    _, ready = measure(prepared_step, state, lambda: prepared, args.steps, key)
    return batch / full, batch / ready, batch


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax

    counts = device_counts(args.devices, jax.device_count())
    device = jax.devices()[0]
    print(f"{device.platform} {device.device_kind}, {jax.device_count()} device(s)"
          f"{', tiny models' if args.tiny else ''}; images/s, median of {args.steps} steps")
    print("| layout | dtype | devices | batch | full step | prepared data |")
    print("|---|---|---|---|---|---|")
    for layout in args.layouts.split(","):
        for dtype in args.dtypes.split(","):
            for devices in counts:
                full, ready, batch = run(layout, dtype, devices, args)
                print(f"| {layout} | {dtype} | {devices} | {batch} | {full:,.0f} | "
                      f"{ready:,.0f} |", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
