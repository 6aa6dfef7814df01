"""The default job, launch to table: ltx against the same recipe in PyTorch eager.

`python -m ltx.train --config=configs/digits_lt_balpoe.py` (README command 1's job) and
experiments/pytorch_digits_balpoe.py (the same images, model, loss, optimizer, schedule,
evaluations and checkpoints in PyTorch eager) run as fresh processes in alternating rounds; the
order rotates every round, so neither always runs first on a machine whose speed drifts. Kinds:

- `ltx-warm`: ltx with a compilation cache that an unmeasured first run filled (a second launch
  of the job on one machine);
- `ltx-empty`: ltx with an empty compilation cache (the first launch);
- `torch`: PyTorch eager (`--torch-python`, an interpreter that has PyTorch; ltx never needs it).

Each run's wall time counts from launch to exit. Every line a run prints is timestamped, and the
first round's ltx timelines are printed (imports and setup until the first line, the loop, the
final report), so the breakdown comes with the times. The table gives the median and range of
each kind and, per round, torch seconds / ltx seconds (> 1: ltx is faster).

    python experiments/benchmark_default_job.py --torch-python /tmp/torchenv/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
CONFIG = os.path.join(ROOT, "configs", "digits_lt_balpoe.py")
TORCH_SCRIPT = os.path.join(ROOT, "experiments", "pytorch_digits_balpoe.py")
LOOP = re.compile(r"Finished .*? in ([0-9.]+)s")


def export_digits(path: str) -> None:
    """Writes ltx's digits-LT (ratio 10, the config's subset) as the .npz the PyTorch script
    reads."""
    import numpy as np

    from ltx.data import digits
    dataset = digits.digits_lt(10.0, profile="exp", subset_seed=0)
    arrays = {"mean": np.asarray(dataset.mean, np.float32),
              "std": np.asarray(dataset.std, np.float32)}
    for name in ("train", "val", "test"):
        split = getattr(dataset, name)
        arrays[f"{name}_images"] = np.stack([split.source[int(i)]["image"]
                                             for i in split.indices]).astype(np.uint8)
        arrays[f"{name}_labels"] = np.asarray(split.labels, np.int64)
    np.savez(path, **arrays)


def timed(command: list[str], env: dict) -> tuple[float, float, list[tuple[float, str]]]:
    """(wall seconds, train-loop seconds as printed, [(seconds since launch, line)])."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=ROOT)
    lines = [(time.perf_counter() - start, line.rstrip()) for line in process.stdout]
    process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited {process.returncode}:\n"
                           + "\n".join(line for _, line in lines[-20:]))
    loops = [float(m.group(1)) for _, line in lines for m in [LOOP.search(line)] if m]
    return wall, loops[-1] if loops else float("nan"), lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-python", default="", help="an interpreter with PyTorch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["ltx-warm", "ltx-empty", "torch"])
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds if k != "torch" or args.torch_python]
    scratch = tempfile.mkdtemp(prefix="default_job_")
    data = os.path.join(scratch, "digits_lt.npz")
    export_digits(data)
    warm_cache = os.path.join(scratch, "cache_warm")

    def command(kind: str, run: str) -> tuple[list[str], dict]:
        env = dict(os.environ)
        workdir = os.path.join(scratch, run)
        if kind == "torch":
            return [args.torch_python, TORCH_SCRIPT, f"--data={data}",
                    f"--workdir={workdir}"], env
        env["LTX_COMPILE_CACHE"] = (warm_cache if kind == "ltx-warm"
                                    else os.path.join(scratch, f"cache_{run}"))
        return [sys.executable, "-m", "ltx.train", f"--config={CONFIG}",
                f"--workdir={workdir}"], env

    if "ltx-warm" in kinds:  # Fills the warm cache; not measured.
        timed(*command("ltx-warm", "fill_cache"))
    results = {kind: [] for kind in kinds}
    for round_index in range(args.rounds):
        order = kinds[round_index % len(kinds):] + kinds[:round_index % len(kinds)]
        for kind in order:
            wall, loop, lines = timed(*command(kind, f"{kind}_{round_index}"))
            results[kind].append((wall, loop))
            print(f"round {round_index} {kind}: {wall:.1f}s launch to exit, loop {loop:.1f}s",
                  flush=True)
            if round_index == 0 and kind != "torch":
                shown = [lines[0]] + [x for x in lines if "step 50/" in x[1] or "Finished" in
                                      x[1] or x[1].startswith("val ")] + [lines[-1]]
                for at, line in shown:
                    print(f"    {at:7.1f}s  {line[:100]}")
    print(f"\n| kind | launch to exit s, median (range) | train loop s, median | rounds |")
    print("|---|---|---|---|")
    for kind, rows in results.items():
        walls, loops = [w for w, _ in rows], [l for _, l in rows]
        print(f"| {kind} | {statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}) "
              f"| {statistics.median(loops):.1f} | {len(rows)} |")
    if "torch" in results:
        for kind in (k for k in kinds if k != "torch"):
            ratios = [t[0] / l[0] for t, l in zip(results["torch"], results[kind])]
            print(f"torch / {kind} launch-to-exit per round: "
                  + ", ".join(f"{r:.3f}" for r in ratios)
                  + f"; median {statistics.median(ratios):.3f} (> 1: ltx faster)")


if __name__ == "__main__":
    main()
