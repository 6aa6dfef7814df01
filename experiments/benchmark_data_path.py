"""Images per second of the training-data path: the host pipeline against augmentation on device.

Both paths make the same kind of batches (`ltx.data.pipeline.train_dataset` vs
`train_index_dataset` + `ltx.data.device_augment`; tests/test_device_augment.py checks that
they agree for the same random parameters): a CIFAR-LT sized in-memory training set (10,847
random 32x32x3 images, CIFAR-100-LT at ratio 100), batch 128, pad-4 crop + flip +
normalisation, the padded last batch of every epoch.

- host: the grain iterator in this process (`data.num_workers=0`, ltx's default);
- device: the index iterator on the host plus the jitted gather + augmentation + normalisation
  of the train step, on an array already on the device; the output is waited for every batch.
`--autoaugment` adds the AutoAugment CIFAR-10 policy to both, `--rotation=15` RIDE's rotation.

The two are timed in alternating rounds (`--rounds`, each `--batches` batches) and the median
images/s of each, and their ratio, are printed. `--one-core` pins the process to one CPU core
and single-threads XLA, the setting of the issue's target (>= 50,000 images/s on one core).

    python experiments/benchmark_data_path.py --one-core
    python experiments/benchmark_data_path.py --one-core --autoaugment
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=10847)
    p.add_argument("--batches", type=int, default=40, help="Batches per timed round.")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--autoaugment", action="store_true", help="Add the AutoAugment policy.")
    p.add_argument("--rotation", type=float, default=0.0, help="RandomRotation degrees.")
    p.add_argument("--one-core", action="store_true",
                   help="Pin to CPU 0 and run XLA single-threaded.")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one_core:
        # Before JAX starts: XLA reads its flags once.
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1")
    import jax
    import numpy as np

    from ltx.data import augment, device_augment, pipeline, splits

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=args.images)
    split = splits.Split(splits.ArraySource(images, labels), np.arange(args.images), labels)
    mean, std = augment.CIFAR_MEAN, augment.CIFAR_STD
    transform = augment.make_train_transform(crop_padding=4, flip=True,
                                             autoaugment=args.autoaugment,
                                             rotation=args.rotation)
    host_it = pipeline.train_iterator(pipeline.train_dataset(
        split, global_batch_size=args.batch, seed=0, mean=mean, std=std, transform=transform))
    index_it = pipeline.train_iterator(pipeline.train_index_dataset(
        split, global_batch_size=args.batch, seed=0))
    batch_augment = device_augment.make_batch_augment(
        {"kind": "cifar", "crop_padding": 4, "flip": True, "autoaugment": args.autoaugment,
         "rotation": args.rotation}, mean=mean, std=std)
    source = jax.device_put(images)
    step = jax.jit(lambda key, source, index: batch_augment(key, source[index]))
    key = jax.random.key(0)

    def host_round():
        for _ in range(args.batches):
            next(host_it)["image"].sum()

    counter = [0]

    def device_round():
        for _ in range(args.batches):
            batch = next(index_it)
            counter[0] += 1
            step(jax.random.fold_in(key, counter[0]), source, batch["index"]).block_until_ready()

    host_round(), device_round()  # Warm-up: compilation, iterator threads.
    rates = {"host": [], "device": []}
    for _ in range(args.rounds):
        for name, fn in (("host", host_round), ("device", device_round)):
            start = time.perf_counter()
            fn()
            rates[name].append(args.batches * args.batch / (time.perf_counter() - start))
    host, device = statistics.median(rates["host"]), statistics.median(rates["device"])
    cores = len(os.sched_getaffinity(0))
    print(f"{jax.default_backend()} backend, {cores} core(s), batch {args.batch}, "
          f"{args.rounds} alternating rounds of {args.batches} batches")
    steps = "crop + flip" + (" + AutoAugment" if args.autoaugment else "") + (
        f" + rotation {args.rotation:g}" if args.rotation else "") + " + normalise"
    print(f"host pipeline ({steps}): {host:,.0f} images/s")
    print(f"on device (gather + {steps}): {device:,.0f} images/s")
    print(f"ratio device / host: {device / host:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
