"""Grids of training runs and their paper-style table: configs x config arguments x overrides x
seeds, each run in its own workdir under one root.

    ltx-sweep --root=runs/digits --configs=configs/digits_lt_ce.py,configs/digits_lt_balpoe.py \
        --seeds=1,2,3 [--args=ir=10,50] [--set=optimizer.lr=0.05,0.1] [--parallel=2] [--eval]
    ltx-sweep --root=runs/digits --table          # tabulate what is there, train nothing

A run is `<root>/<cell>/seed<s>/` (its log beside it, `seed<s>.log`); a cell is one config with
one value of every axis, named `<config stem>[__<key>=<value>...]`. The root may be a URL
(`gs://bucket/sweep`, `ltx.files`): a run's log is then written to a local temporary file while
the run lasts (its process writes to a real file only) and appended to `seed<s>.log` at its
end. Each run is the ordinary training command (`python -m ltx.train`) in a subprocess, so a
finished run is skipped (its workdir has final_metrics.json), an interrupted one resumes from
its checkpoint, and one that fails is reported without stopping the others. `--eval` also runs
`ltx-eval` for the shifted test distributions. `--pack` trains the unfinished seeds of each cell
as one process and one program (`ltx.packed`: one start, one compilation; on an accelerator one
launch per step for all of them), writing the same workdirs; its output goes to
`<cell>/packed.log`.

The table has one row per cell: mean ± std over its finished seeds (population std, ddof 0) of
test top-1 all/many/medium/few, ECE and NLL, and with `--eval` the ensemble's top-1 (sample
accuracy) under every test distribution (forward-50 ... uniform ... backward-50), and the same
with SADE's learned weights where `ltx-eval --test_time_aggregation` was run on a workdir
('<distribution> test-time'); written as `table.md`, `table.csv` and `table.json` in the root,
and printed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Sequence

import numpy as np

from ltx import files

COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "ece", "nll")
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the grid."""
    config: str                       # Path of the config file.
    arg: str                          # Its config argument ('ir=10,epochs=5'), maybe ''.
    overrides: tuple[tuple[str, str], ...]  # (dotted key, value) of --config.<key>=<value>.
    seed: int
    cell: str                         # The folder of its cell under the root.

    def command(self, workdir: str) -> list[str]:
        config = f"{self.config}:{self.arg}" if self.arg else self.config
        return ([sys.executable, "-m", "ltx.train", f"--config={config}",
                 f"--workdir={workdir}", f"--config.seed={self.seed}"]
                + [f"--config.{key}={value}" for key, value in self.overrides])


def _axis(spec: str, what: str) -> tuple[str, list[str]]:
    """'key=v1,v2' -> ('key', ['v1', 'v2'])."""
    key, sep, values = spec.partition("=")
    if not sep or not key or not values:
        raise ValueError(f"{what} {spec!r}; expected key=value1,value2,...")
    return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def grid(configs: Sequence[str], seeds: Sequence[int], *, args: Sequence[str] = (),
         overrides: Sequence[str] = ()) -> list[Run]:
    """Every run of configs x config-argument axes x override axes x seeds.

    Args:
      configs: config files, each optionally with its own argument ('configs/x.py:mixup=0.4').
      seeds: the seeds (`config.seed`).
      args: config-argument axes, 'ir=10,50,100' (added to each config's argument).
      overrides: override axes, 'optimizer.lr=0.05,0.1' (as --config.optimizer.lr=...).
    """
    if not configs or not seeds:
        raise ValueError(f"a sweep needs configs and seeds; got {list(configs)} and "
                         f"{list(seeds)}")
    arg_axes = [_axis(a, "--args") for a in args]
    set_axes = [_axis(o, "--set") for o in overrides]
    runs = []
    for spec in configs:
        path, _, own_arg = spec.partition(":")
        # A config file is a Python module that the training subprocess imports from the local
        # disk (ml_collections' config_flags), never a URL: the operating system's calls.
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        stem = os.path.splitext(os.path.basename(path))[0]
        for arg_values in itertools.product(*[values for _, values in arg_axes]):
            chosen_args = [f"{key}={v}" for (key, _), v in zip(arg_axes, arg_values)]
            arg = ",".join(x for x in [own_arg, *chosen_args] if x)
            for set_values in itertools.product(*[values for _, values in set_axes]):
                chosen = tuple((key, v) for (key, _), v in zip(set_axes, set_values))
                parts = [own_arg.replace(",", "__")] if own_arg else []
                parts += chosen_args + [f"{k}={v}" for k, v in chosen]
                cell = _SAFE.sub("-", "__".join([stem] + parts))
                runs += [Run(path, arg, chosen, int(seed), cell) for seed in seeds]
    return runs


def workdir_of(root: str, run: Run) -> str:
    return files.join(root, run.cell, f"seed{run.seed}")


def _finished(workdir: str, evaluate: bool) -> bool:
    done = files.isfile(files.join(workdir, "final_metrics.json"))
    return done and (not evaluate or files.isfile(files.join(workdir, "eval", "report.json")))


@dataclasses.dataclass(frozen=True)
class _Job:
    """One subprocess of a sweep: one run, or (packed) the unfinished runs of one cell."""
    runs: tuple[Run, ...]
    workdir: str  # The run's workdir; a packed job's cell folder.
    log: str      # Where its output goes, `<workdir>.log`.

    def script(self, root: str, evaluate: bool) -> str:
        first = self.runs[0]
        if len(self.runs) == 1 and self.workdir == workdir_of(root, first):
            script = shlex.join(first.command(self.workdir))
            if evaluate:
                script += " && " + shlex.join(_eval_command(self.workdir))
            return script
        seeds = ",".join(str(run.seed) for run in self.runs)
        command = first.command(self.workdir)
        command = [a for a in command if not a.startswith("--config.seed=")]
        script = shlex.join(command + [f"--config.pack.seeds=({seeds},)"])
        if evaluate:  # Each run that trained to its end is evaluated, whatever the others did.
            for run in self.runs:
                workdir = workdir_of(root, run)
                final = shlex.quote(files.join(workdir, "final_metrics.json"))
                script += (f"; if [ -f {final} ]; then "
                           f"{shlex.join(_eval_command(workdir))}; fi")
        return script


def _eval_command(workdir: str) -> list[str]:
    return [sys.executable, "-m", "ltx.cli", "eval", f"--workdir={workdir}", "--nopictures"]


def _jobs(todo: Sequence[Run], root: str, pack: bool) -> list[_Job]:
    if not pack:
        return [_Job((run,), workdir_of(root, run), f"{workdir_of(root, run)}.log")
                for run in todo]
    cells: dict[str, list[Run]] = {}
    for run in todo:
        cells.setdefault(run.cell, []).append(run)
    return [_Job(tuple(runs), files.join(root, cell), files.join(root, cell, "packed.log"))
            for cell, runs in cells.items()]


def run_grid(runs: Sequence[Run], root: str, *, parallel: int = 1, evaluate: bool = False,
             one_device_each: bool = False, pack: bool = False, log=print) -> dict[str, str]:
    """Trains (and with `evaluate`, evaluates) every run not finished yet, `parallel` at once.

    `pack`: the unfinished seeds of each cell train as one process and one program
    (`ltx.packed`, `--config.pack.seeds`), its output in `<root>/<cell>/packed.log`.
    `one_device_each`: process k of those in flight sees only device k (CUDA_VISIBLE_DEVICES
    and TPU_VISIBLE_CHIPS), for a host with several accelerators. Returns {workdir: 'done' |
    'skipped' | 'failed (exit N, see <log>)'}.
    """
    if parallel < 1:
        raise ValueError(f"parallel={parallel}; expected >= 1")
    status: dict[str, str] = {}
    todo = []
    for run in runs:
        workdir = workdir_of(root, run)
        if _finished(workdir, evaluate):
            status[workdir] = "skipped"
        else:
            todo.append(run)
    log(f"{len(runs)} runs in {root}: {len(runs) - len(todo)} finished, {len(todo)} to run")
    running: dict[int, tuple[subprocess.Popen, _Job, Any]] = {}
    queue = _jobs(todo, root, pack)
    while queue or running:
        while queue and len(running) < parallel:
            slot = next(s for s in range(parallel) if s not in running)
            job = queue.pop(0)
            running[slot] = _start(job, root, slot, evaluate, one_device_each)
            log(f"  started {job.workdir}" + (f" (seeds {[r.seed for r in job.runs]} packed)"
                                              if pack else ""))
        time.sleep(0.2)
        for slot, (process, job, logfile) in list(running.items()):
            if process.poll() is None:
                continue
            del running[slot]
            _close_log(logfile, job.log)
            for run in job.runs:
                workdir = workdir_of(root, run)
                ok = (_finished(workdir, evaluate) if pack else process.returncode == 0)
                status[workdir] = ("done" if ok else
                                   f"failed (exit {process.returncode}, see {job.log})")
                log(f"  {status[workdir]}: {workdir}")
    return status


def _start(job: _Job, root: str, slot: int, evaluate: bool, one_device_each: bool):
    files.makedirs(files.dirname(job.workdir))
    env = dict(os.environ)
    if one_device_each:
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
        env["TPU_VISIBLE_CHIPS"] = str(slot)
    script = job.script(root, evaluate)
    logfile = _open_log(job.log)
    logfile.write(f"$ {script}\n")
    logfile.flush()
    process = subprocess.Popen(["bash", "-c", script], stdout=logfile, stderr=subprocess.STDOUT,
                               env=env)
    return process, job, logfile


def _open_log(path: str) -> IO:
    """The file a subprocess writes its output to. Under a local root `path` itself, appended
    to (a retried run keeps the output of the earlier tries). Under a URL root a local
    temporary file, since a child process writes to a real file only; `_close_log` appends it
    to `path` when the process ends."""
    if files.is_local(path):
        files.makedirs(files.dirname(path))
        return open(files.expand(path), "a")
    # errors='replace': the child's output need not be UTF-8, and append_text takes text.
    return tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace", suffix=".log")


def _close_log(logfile: IO, path: str) -> None:
    """Closes a finished process's log; under a URL root its output is first appended to
    `path` (read from the start: the child moved the offset it shares with this file to the
    end)."""
    try:
        if not files.is_local(path):
            logfile.seek(0)
            files.append_text(path, logfile.read())
    finally:
        logfile.close()


def _distribution_top1(workdir: str) -> dict[str, float]:
    path = files.join(workdir, "eval", "report.json")
    if not files.isfile(path):
        return {}
    report = files.read_json(path)
    # The sample accuracy, the headline of the references' test-agnostic tables (and of
    # ltx-eval's report), then SADE's test-time aggregation where ltx-eval ran it.
    found = {name: d["plain"]["top1_samples"]
             for name, d in report.get("distributions", {}).items()
             if d.get("plain", {}).get("top1_samples") is not None}
    for name, d in report.get("test_time", {}).get("distributions", {}).items():
        found[f"{name} test-time"] = d["report"]["top1_samples"]
    return found


def collect(root: str) -> list[dict[str, Any]]:
    """One row per cell folder of `root` with at least one finished seed: {'cell', 'seeds',
    '<column>': (mean, std), 'distributions': {name: (mean, std)}}."""
    if not files.isdir(root):
        raise FileNotFoundError(f"sweep root {root!r} does not exist")
    rows = []
    for cell in files.listdir(root):
        folder = files.join(root, cell)
        seeds = sorted((int(name[4:]), files.join(folder, name)) for name in
                       (files.listdir(folder) if files.isdir(folder) else [])
                       if name.startswith("seed") and name[4:].isdigit()
                       and files.isfile(files.join(folder, name, "final_metrics.json")))
        if not seeds:
            continue
        finals = [files.read_json(files.join(workdir, "final_metrics.json"))
                  for _, workdir in seeds]
        row: dict[str, Any] = {"cell": cell, "seeds": [s for s, _ in seeds]}
        for column in COLUMNS:
            values = np.array([float(f[column]) for f in finals if f.get(column) is not None],
                              np.float64)
            row[column] = _mean_std(values)
        shifted = [_distribution_top1(workdir) for _, workdir in seeds]
        names = ([n for n in shifted[0] if all(n in s for s in shifted)]
                 if shifted and all(shifted) else [])
        row["distributions"] = {n: _mean_std(np.array([s[n] for s in shifted if n in s]))
                                for n in names}
        rows.append(row)
    return rows


def _mean_std(values: np.ndarray) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    return None if values.size == 0 else (float(values.mean()), float(values.std(ddof=0)))


def _cell(value) -> str:
    return "-" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}"


def _headers(rows) -> list[str]:
    names = []
    for row in rows:
        names += [n for n in row["distributions"] if n not in names]
    return names


def format_markdown(rows: list[dict[str, Any]]) -> str:
    shifted = _headers(rows)
    header = ["cell", "seeds", *COLUMNS, *shifted]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["cell"], ",".join(map(str, row["seeds"]))]
        cells += [_cell(row[c]) for c in COLUMNS]
        cells += [_cell(row["distributions"].get(n)) for n in shifted]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict[str, Any]]) -> str:
    shifted = _headers(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cell", "seeds"] + [f"{c}_{s}" for c in (*COLUMNS, *shifted)
                                         for s in ("mean", "std")])
    for row in rows:
        values = [row[c] for c in COLUMNS] + [row["distributions"].get(n) for n in shifted]
        writer.writerow([row["cell"], " ".join(map(str, row["seeds"]))]
                        + [x for v in values for x in (("", "") if v is None else v)])
    return out.getvalue()


def write_table(root: str, *, pictures: bool = True) -> list[dict[str, Any]]:
    """`collect(root)` written as table.md, table.csv and table.json in `root`, and with
    `pictures` the PNGs of `write_plots`."""
    rows = collect(root)
    files.write_text(files.join(root, "table.md"), format_markdown(rows))
    files.write_text(files.join(root, "table.csv"), format_csv(rows))
    files.write_json(files.join(root, "table.json"), rows, sort_keys=False)
    if pictures and rows:
        write_plots(root, rows)
    return rows


def _split_cell(cell: str) -> tuple[str, dict[str, str]]:
    """'digits_lt_ce__ir=10__optimizer.lr=0.1' -> ('digits_lt_ce', {'ir': '10', ...})."""
    stem, *parts = cell.split("__")
    axes = dict(p.split("=", 1) for p in parts if "=" in p)
    return stem, axes


def write_plots(root: str, rows: list[dict[str, Any]]) -> list[str]:
    """The sweep's pictures in `root`: `groups.png` (every cell's all/many/medium/few top-1
    with std bars), `vs_<axis>.png` for each numeric axis with several values (e.g. the
    imbalance ratio `ir`: a line per cell without that axis) and `vs_test_distribution.png`
    (top-1 from forward-50 to backward-50, a line per cell) when the runs were evaluated.
    Returns the paths written."""
    from ltx import plots  # matplotlib, only when drawing.
    cells = [r["cell"] for r in rows]
    written = [files.join(root, "groups.png")]
    plots.sweep_group_accuracy(written[0], cells, {
        g.removeprefix("top1_"): [r[g] for r in rows]
        for g in ("top1_all", "top1_many", "top1_medium", "top1_few")})
    parsed = [_split_cell(c) for c in cells]
    for axis in sorted({k for _, axes in parsed for k in axes}):
        values = {axes[axis] for _, axes in parsed if axis in axes}
        if len(values) < 2 or any(_number(v) is None for v in values):
            continue
        values = sorted(values, key=_number)
        lines: dict[str, list] = {}
        for row, (stem, axes) in zip(rows, parsed):
            if axis not in axes:
                continue
            rest = "__".join([stem] + [f"{k}={v}" for k, v in axes.items() if k != axis])
            lines.setdefault(rest, [None] * len(values))[values.index(axes[axis])] = (
                row["top1_all"])
        path = files.join(root, f"vs_{_SAFE.sub('-', axis)}.png")
        plots.sweep_lines(path, [_number(v) for v in values], lines, xlabel=axis,
                          ylabel="test top-1, all classes (%)", log_x=True)
        written.append(path)
    names = [n for n in _headers(rows) if not n.endswith(" test-time")]
    if names:
        path = files.join(root, "vs_test_distribution.png")
        plots.sweep_lines(path, names, {r["cell"]: [r["distributions"].get(n) for n in names]
                                        for r in rows}, xlabel="test distribution")
        written.append(path)
    return written


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
