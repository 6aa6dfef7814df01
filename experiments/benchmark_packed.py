"""Packed runs (`ltx.packed`) against separate runs: the step's images/s and a seed cell's wall
time.

1. step: images/s of the train step of N runs packed (N x batch images per packed step), for
   ResNet-32 with 1 expert (configs/cifar100_lt_ce.py) and 3 experts
   (configs/cifar100_lt_balpoe.py), N = 1, 3, 5, each packing form ('loop': the one-run
   program per run; 'scan': one program, runs one after another; 'vmap': one batched program),
   on one normalised batch already on the devices; median of `--steps` steps after 2 warm-up
   steps (compilation), every step waited for. N = 1 'loop' is the run alone.
2. cell: wall time of a digits-LT cell of `--seeds` seeds from launch to the last table,
   `python -m ltx.train` once per seed one after another vs once with
   `--config.pack.seeds`; alternating pairs (separate, packed), each in fresh workdirs, with
   the compilation cache off so every launch compiles (`--warm-cache` keeps a shared warm one).

    python experiments/benchmark_packed.py step                     # CPU or accelerator
    python experiments/benchmark_packed.py cell --pairs 3           # configs/digits_lt_balpoe.py
    python experiments/benchmark_packed.py cell --config configs/digits_lt_ride.py --pairs 1
    python experiments/benchmark_packed.py step --tiny --steps 1    # seconds: the smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
LAYOUTS = {"resnet32x1": "cifar100_lt_ce.py", "resnet32x3": "cifar100_lt_balpoe.py"}
WARMUP = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("step", "cell"))
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--packs", default="1,3,5", help="Numbers of packed runs (step).")
    p.add_argument("--forms", default="", help="Packing forms (step; default: loop,scan on "
                   "CPU, loop,vmap elsewhere).")
    p.add_argument("--batch", type=int, default=128, help="Per-run batch (step).")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="Quarter-width one-block trunks.")
    p.add_argument("--config", default="configs/digits_lt_balpoe.py", help="Config (cell).")
    p.add_argument("--seeds", default="1,2,3", help="The cell's seeds (cell).")
    p.add_argument("--pairs", type=int, default=3, help="Alternating pairs (cell).")
    p.add_argument("--warm-cache", action="store_true", help="Cell: a shared compilation "
                   "cache, warmed by one untimed run of each kind first.")
    return p.parse_args(argv)


def step_table(args) -> list[str]:
    """Markdown rows: layout, form, N, images/s, images/s per run, speed-up over N x alone."""
    import jax
    import numpy as np

    from ltx import config_lib, packed, parts as parts_lib, steps
    from ltx.data import long_tail

    forms = args.forms.split(",") if args.forms else (
        ["loop", "scan"] if jax.default_backend() == "cpu" else ["loop", "vmap"])
    mesh = steps.make_mesh()
    rows = []
    for layout in args.layouts.split(","):
        config = config_lib.load_config_file(os.path.join(ROOT, "configs", LAYOUTS[layout]),
                                             "tiny=1" if args.tiny else None)
        counts = long_tail.long_tail_counts(500, 100, 100.0)
        method, model = parts_lib.build_method_and_model(config, counts)
        from ltx import optim
        schedule = optim.learning_rate_schedule(config.schedule, base_lr=0.1,
                                                num_epochs=config.num_epochs, steps_per_epoch=10)
        tx = optim.make_optimizer(config.optimizer, schedule, trainable=method.trainable)
        rng = np.random.default_rng(0)
        batch = {"image": rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32),
                 "label": rng.integers(0, 100, args.batch).astype(np.int32),
                 "mask": np.ones(args.batch, bool)}
        alone = None
        for form in forms:
            for n in [int(x) for x in args.packs.split(",")]:
                step = steps.make_packed_train_step(model, method, tx, schedule, mesh,
                                                    form=form, mixup_alpha=config.mixup_alpha,
                                                    steps_per_epoch=10)
                states = [steps.create_train_state(jax.random.key(k, impl="rbg"), model, tx,
                                                   (32, 32, 3), mesh) for k in range(n)]
                keys = [jax.random.key(k) for k in range(n)]
                if form == "loop":
                    batches = [steps.make_to_global(mesh)(batch)] * n
                    states_in, keys_in = states, keys
                else:
                    sharding = jax.sharding.NamedSharding(
                        mesh, jax.sharding.PartitionSpec(None, "data"))
                    batches = {k: jax.device_put(np.stack([v] * n), sharding)
                               for k, v in batch.items()}
                    states_in, keys_in = packed.stack(states), packed.stack(keys)
                times = []
                for _ in range(WARMUP + args.steps):
                    start = time.perf_counter()
                    states_in, metrics = step(states_in, batches, keys_in, None, None)
                    jax.block_until_ready(metrics)
                    times.append(time.perf_counter() - start)
                rate = n * args.batch / statistics.median(times[WARMUP:])
                if form == "loop" and n == 1:
                    alone = rate
                gain = f"{rate / alone:.2f}" if alone else "-"
                rows.append(f"| {layout} | {form} | {n} | {rate:,.0f} | {rate / n:,.0f} | "
                            f"{gain} |")
                print(rows[-1], flush=True)
    return rows


def _launch(config: str, workdir: str, extra: list[str], cache: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ltx.train", f"--config={config}",
                    f"--workdir={workdir}", f"--config.compile_cache_dir={cache}", *extra],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cell(args) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = tempfile.mkdtemp(prefix="ltx-pack-cache-") if args.warm_cache else "off"

    def separate(root):
        return sum(_launch(args.config, os.path.join(root, f"seed{s}"),
                           [f"--config.seed={s}"], cache) for s in seeds)

    def together(root):
        return _launch(args.config, root, [f"--config.pack.seeds=({args.seeds},)"], cache)

    if args.warm_cache:
        separate(tempfile.mkdtemp())
        together(tempfile.mkdtemp())
    print(f"{args.config}, seeds {seeds}, compilation cache "
          f"{'warm' if args.warm_cache else 'off'}; seconds from launch to the last table")
    print("| pair | separate | packed | packed / separate |")
    print("|---|---|---|---|")
    ratios = []
    for pair in range(args.pairs):
        a = separate(tempfile.mkdtemp())
        b = together(tempfile.mkdtemp())
        ratios.append(b / a)
        print(f"| {pair + 1} | {a:.1f} | {b:.1f} | {b / a:.3f} |", flush=True)
    print(f"median packed / separate {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.what == "cell":
        cell(args)
        return
    import jax
    device = jax.devices()[0]
    print(f"{device.platform} {device.device_kind}, {jax.device_count()} device(s); per-run "
          f"batch {args.batch}{', tiny models' if args.tiny else ''}; images/s, median of "
          f"{args.steps} steps")
    print("| layout | form | runs | images/s | per run | speed-up over runs one after another |")
    print("|---|---|---|---|---|---|")
    step_table(args)


if __name__ == "__main__":
    main()
