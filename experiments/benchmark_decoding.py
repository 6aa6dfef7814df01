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

`--tfds_data_dir=DIR` compares a TFDS source with JPEG list files over the same JPEG bytes: the
`imagenet_lt` train split of DIR (ArrayRecord, read through `ltx.data.tfds_source` without
TensorFlow) against the same encoded images written out as files with a list file, each
measured as above, alternating the two sources `--pairs` times. A DIR of 500x375 JPEGs comes
from `tests/fixtures/tfds/make_fixtures.py --benchmark DIR` (in an environment with
TensorFlow, once).

    python experiments/benchmark_decoding.py --tfds_data_dir=/tmp/bench_tfds --images 512

`--records` compares the JPEG list files with the same images written by `ltx-prepare records`
(ArrayRecord shards, shorter side resized to `--shorter_side`, 256 by default, JPEG quality 95),
alternating the two `--pairs` times.

    python experiments/benchmark_decoding.py --records --images 512
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
    p.add_argument("--tfds_data_dir", default="", help="compare TFDS imagenet_lt records with "
                   "the same JPEGs as list files")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--records", action="store_true", help="compare the JPEG list files with "
                   "ArrayRecord shards of the same images resized")
    p.add_argument("--shorter_side", type=int, default=256)
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


def _tfds_and_files(data_dir: str, folder: str, count: int):
    """(TFDS split, list-file split) of the first `count` imagenet_lt train records, the second
    over the same encoded JPEGs written to `folder`."""
    import numpy as np

    from ltx.data import image_lists, splits, tfds_source

    labels = tfds_source.split_index("imagenet_lt", data_dir, "train")["label"]
    count = min(count, len(labels))
    source = tfds_source.TfdsSource("imagenet_lt", data_dir, ("train",), labels)
    lines = []
    for i in range(count):
        name = f"img{i:05d}.jpg"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(source.record(i)["image"])
        lines.append(f"{name} {labels[i]}\n")
    list_path = os.path.join(folder, "train.txt")
    with open(list_path, "w") as f:
        f.writelines(lines)
    tfds_split = splits.Split(source, np.arange(count), labels[:count])
    return tfds_split, image_lists.load_split(list_path, folder, 1000)


def _measure(split, args, cores: int, label: str) -> None:
    from ltx.data import augment, augment_imagenet, pipeline

    mean, std = augment.IMAGENET_MEAN, augment.IMAGENET_STD
    transform = augment_imagenet.make_train_transform(crop_size=224)
    for workers in (0, pipeline.AUTO_WORKERS):
        count = pipeline.resolve_num_workers(workers)
        iterator = pipeline.train_iterator(pipeline.train_dataset(
            split, global_batch_size=args.batch, seed=0, mean=mean, std=std,
            transform=transform), num_workers=count)
        next(iterator)  # Start-up of the workers.
        steps = max(1, len(split) // args.batch)
        start = time.perf_counter()
        for _ in range(steps):
            next(iterator)
        rate = steps * args.batch / (time.perf_counter() - start)
        used = max(count, 1)
        print(f"{label}train, num_workers={count}: {rate:,.0f} images/s, "
              f"{rate / used:,.0f} per core", flush=True)
    eval_transform = augment_imagenet.make_eval_transform()
    for threads in (1, None):
        start = time.perf_counter()
        for _ in pipeline.eval_batches(split, global_batch_size=args.batch, mean=mean,
                                       std=std, transform=eval_transform, threads=threads):
            pass
        rate = len(split) / (time.perf_counter() - start)
        used = 1 if threads == 1 else min(16, cores)
        print(f"{label}eval, {used} thread(s): {rate:,.0f} images/s, {rate / used:,.0f} per "
              "core", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    from absl import flags

    from ltx.data import image_lists

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags.
        flags.FLAGS(["benchmark_decoding"])

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        if args.records:
            from ltx.data import records
            list_path = _write_images(folder, args.images)
            out = os.path.join(folder, "records")
            start = time.perf_counter()
            records.write_list(list_path, folder, out, num_classes=10,
                               shorter_side=args.shorter_side)
            seconds = time.perf_counter() - start
            jpegs = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                        if f.endswith(".jpg"))
            shards = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                         if ".array_record" in f)
            print(f"{args.images} JPEGs of 500x375 ({jpegs / 2**20:.1f} MiB) and as records of "
                  f"shorter side {args.shorter_side} ({shards / 2**20:.1f} MiB, written in "
                  f"{seconds:.1f} s on one core), batch {args.batch}, {cores} core(s)")
            list_split = image_lists.load_split(list_path, folder, 10)
            record_split = records.list_split(out, list_path, 10)
            for pair in range(args.pairs):
                _measure(list_split, args, cores, f"pair {pair + 1} files: ")
                _measure(record_split, args, cores, f"pair {pair + 1} records: ")
            return
        if not args.tfds_data_dir:
            split = image_lists.load_split(_write_images(folder, args.images), folder, 10)
            print(f"{args.images} JPEGs of 500x375, batch {args.batch}, {cores} core(s)")
            _measure(split, args, cores, "")
            return
        tfds_split, list_split = _tfds_and_files(args.tfds_data_dir, folder, args.images)
        size = tfds_split.source[0]["image"].shape
        print(f"{len(tfds_split)} JPEGs of {size[1]}x{size[0]} from TFDS imagenet_lt "
              f"(ArrayRecord) and the same bytes as files, batch {args.batch}, {cores} core(s)")
        for pair in range(args.pairs):
            _measure(tfds_split, args, cores, f"pair {pair + 1} tfds: ")
            _measure(list_split, args, cores, f"pair {pair + 1} files: ")


if __name__ == "__main__":
    main()
