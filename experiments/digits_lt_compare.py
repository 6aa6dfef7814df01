"""Every method and baseline on digits-LT over several seeds.

Trains each default digits-LT config (all its stages, `ltx.stages`) once per seed, each in its own
workdir under --workdir (skipped when its final_metrics.json is already there), and prints per
method the mean ± std over seeds of test top-1 all/many/medium/few, NLL, ECE and MCE, the mean
wall time of the whole pipeline (all stages, compilation and evaluation included), and the
inference cost of the final predictor: parameters and GFLOPs per image (`ltx.stats`; RIDE: the
router cascade's measured average, the class-balanced experts: the three experts together).

    python experiments/digits_lt_compare.py --workdir=runs/compare --seeds 1 2 3
    python experiments/digits_lt_compare.py --methods RIDE ACE --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ltx import config_lib, stages, stats

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
# (row name, config file, config argument)
METHODS = (
    ("CE", "digits_lt_ce", ""),
    ("LA", "digits_lt_la", ""),
    ("focal", "digits_lt_focal", ""),
    ("LDAM-DRW", "digits_lt_ldam_drw", ""),
    ("BalPoE", "digits_lt_balpoe", ""),
    ("BalPoE+Mixup", "digits_lt_balpoe", "mixup=0.4"),
    ("SADE", "digits_lt_sade", ""),
    ("RIDE", "digits_lt_ride", ""),
    ("ACE", "digits_lt_ace", ""),
    ("ALA+MoE", "digits_lt_ala_moe", ""),
    ("CBE", "digits_lt_cbe", ""),
)
COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce")


def inference_cost(workdir: str, final: dict) -> tuple[float, float]:
    """(parameters, GFLOPs per image) of a finished workdir's final predictor (`ltx.stats`; the
    fused class-balanced experts: the three experts together; RIDE's cascade: the measured
    average of experts per image)."""
    cost = stats.workdir_stats(workdir)
    gflops = final.get("gflops_per_image", cost["gflops"])
    return cost["params"], gflops


def run_one(workdir: str, config_name: str, arg: str, seed: int) -> dict:
    path = os.path.join(workdir, "final_metrics.json")
    config = config_lib.load_config_file(os.path.join(CONFIG_DIR, f"{config_name}.py"),
                                         arg or None)
    config.seed = seed
    if not os.path.exists(path):
        start = time.perf_counter()
        stages.train(config, workdir)
        with open(os.path.join(workdir, "wall_seconds.json"), "w") as f:
            json.dump({"wall_seconds": time.perf_counter() - start}, f)
        print(f"  {workdir}: {time.perf_counter() - start:.1f}s", flush=True)
    with open(path) as f:
        final = json.load(f)
    wall = os.path.join(workdir, "wall_seconds.json")
    final["wall_seconds"] = (json.load(open(wall))["wall_seconds"] if os.path.exists(wall)
                             else float("nan"))
    final["params"], final["gflops"] = inference_cost(workdir, final)
    return final


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/digits_lt_compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=[m[0] for m in METHODS],
                   choices=[m[0] for m in METHODS])
    args = p.parse_args(argv)

    results = {}
    for name, config_name, arg in METHODS:
        if name not in args.methods:
            continue
        slug = name.lower().replace("+", "_")
        results[name] = [run_one(os.path.join(args.workdir, f"{slug}_seed{seed}"), config_name,
                                 arg, seed) for seed in args.seeds]

    header = (f"{'method':<14}" + "".join(f"{c:>15}" for c in COLUMNS)
              + f"{'wall_s':>10}{'params_M':>10}{'GFLOPs':>10}")
    print(f"\ndigits-LT test split, mean ± std over seeds {args.seeds}")
    print(header)
    print("-" * len(header))
    for name, runs in results.items():
        cells = []
        for column in COLUMNS:
            values = np.array([r[column] for r in runs], np.float64)
            cells.append(f"{values.mean():8.2f} ±{values.std(ddof=0):5.2f}")
        wall = np.mean([r["wall_seconds"] for r in runs])
        params = np.mean([r["params"] for r in runs]) / 1e6
        gflops = np.mean([r["gflops"] for r in runs])
        print(f"{name:<14}" + "".join(f"{c:>15}" for c in cells)
              + f"{wall:>10.1f}{params:>10.3f}{gflops:>10.4f}")


if __name__ == "__main__":
    main()
