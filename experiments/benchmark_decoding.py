"""Decoded + augmented images per second of the host pipeline for list-file datasets.

The ImageNet-LT transform of the configs (`configs/imagenet_lt_*.py`): JPEG decode,
RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4) for training; decode, Resize(256),
CentreCrop(224) for evaluation. The images are `--images` synthetic JPEGs of 500x375 (ImageNet's
typical size, quality 90) written to a temporary folder with a list file.

- train: the grain iterator with `data.num_workers` = 0 (the main process) and = the automatic
  count (-1: a worker per core but one), batch 64;
- eval: `pipeline.eval_batches` with one thread and with its default pool (a thread per core).
Printed: images/s and images/s per core used.

    python experiments/benchmark_decoding.py --images 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    return p.parse_args(argv)


def _write_images(folder: str, count: int) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC)
        name = f"img{i:05d}.jpg"
        image.save(os.path.join(folder, name), quality=90)
        lines.append(f"{name} {i % 10}\n")
    path = os.path.join(folder, "train.txt")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    from absl import flags

    from ltx.data import augment, augment_imagenet, image_lists, pipeline

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags.
        flags.FLAGS(["benchmark_decoding"])

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        split = image_lists.load_split(_write_images(folder, args.images), folder, 10)
        mean, std = augment.IMAGENET_MEAN, augment.IMAGENET_STD
        transform = augment_imagenet.make_train_transform(crop_size=224)
        print(f"{args.images} JPEGs of 500x375, batch {args.batch}, {cores} core(s)")
        for workers in (0, pipeline.AUTO_WORKERS):
            count = pipeline.resolve_num_workers(workers)
            iterator = pipeline.train_iterator(pipeline.train_dataset(
                split, global_batch_size=args.batch, seed=0, mean=mean, std=std,
                transform=transform), num_workers=count)
            next(iterator)  # Start-up of the workers.
            steps = max(1, args.images // args.batch)
            start = time.perf_counter()
            for _ in range(steps):
                next(iterator)
            rate = steps * args.batch / (time.perf_counter() - start)
            used = max(count, 1)
            print(f"train, num_workers={count}: {rate:,.0f} images/s, "
                  f"{rate / used:,.0f} per core")
        eval_transform = augment_imagenet.make_eval_transform()
        for threads in (1, None):
            start = time.perf_counter()
            for _ in pipeline.eval_batches(split, global_batch_size=args.batch, mean=mean,
                                           std=std, transform=eval_transform, threads=threads):
                pass
            rate = args.images / (time.perf_counter() - start)
            used = 1 if threads == 1 else min(16, cores)
            print(f"eval, {used} thread(s): {rate:,.0f} images/s, {rate / used:,.0f} per core")


if __name__ == "__main__":
    main()
