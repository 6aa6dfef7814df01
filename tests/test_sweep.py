"""ltx-sweep: the grid's runs and names, a resumable sweep of tiny digits-LT runs, and its
table against the runs' own final metrics."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import CONFIG_DIR
from ltx import sweep

CE = os.path.join(CONFIG_DIR, "digits_lt_ce.py")
LA = os.path.join(CONFIG_DIR, "digits_lt_la.py")


def test_the_grid_is_configs_times_axes_times_seeds():
    runs = sweep.grid([CE, f"{LA}:mixup=0.2"], [1, 2], args=["ir=10,50"],
                      overrides=["optimizer.lr=0.05,0.1"])
    assert len(runs) == 2 * 2 * 2 * 2
    cells = sorted({r.cell for r in runs})
    assert cells[0] == "digits_lt_ce__ir=10__optimizer.lr=0.05"
    assert "digits_lt_la__mixup=0.2__ir=50__optimizer.lr=0.1" in cells
    run = next(r for r in runs if r.cell == cells[-1] and r.seed == 2)
    command = run.command("/w")
    assert command[-4:] == [f"--config={LA}:mixup=0.2,ir=50", "--workdir=/w", "--config.seed=2",
                            "--config.optimizer.lr=0.1"]
    with pytest.raises(ValueError, match="key=value1,value2"):
        sweep.grid([CE], [1], args=["ir"])
    with pytest.raises(FileNotFoundError, match="no_such.py"):
        sweep.grid(["configs/no_such.py"], [1])


def _sweep(root, *extra):
    return [sys.executable, "-m", "ltx.cli", "sweep", f"--root={root}",
            f"--configs={CE}:tiny=1,{LA}:tiny=1", "--seeds=1,2", *extra]


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_a_finished_one_trains_nothing(tmp_path):
    root = str(tmp_path / "grid")
    process = subprocess.Popen(_sweep(root), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    first = os.path.join(root, "digits_lt_ce__tiny=1", "seed1", "final_metrics.json")
    while not os.path.exists(first) and time.time() < deadline:
        assert process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # The sweep and the run it had started.
    process.wait()

    result = subprocess.run(_sweep(root, "--parallel=2"), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 runs" in result.stdout and "1 finished, 3 to run" in result.stdout
    rows = json.load(open(os.path.join(root, "table.json")))
    assert [r["cell"] for r in rows] == ["digits_lt_ce__tiny=1", "digits_lt_la__tiny=1"]
    for row in rows:
        assert row["seeds"] == [1, 2]
        finals = [json.load(open(os.path.join(root, row["cell"], f"seed{s}",
                                              "final_metrics.json"))) for s in (1, 2)]
        for column in sweep.COLUMNS:
            values = [f[column] for f in finals]
            assert row[column] == pytest.approx([np.mean(values), np.std(values)])
    table = open(os.path.join(root, "table.md")).read()
    assert "| digits_lt_ce__tiny=1 | 1,2 |" in table
    assert os.path.isfile(os.path.join(root, "table.csv"))
    assert os.path.isfile(os.path.join(root, "groups.png"))

    launches = {p: open(p).read() for p in (os.path.join(root, c, f"seed{s}", "launches.jsonl")
                                           for c in ("digits_lt_ce__tiny=1",
                                                     "digits_lt_la__tiny=1") for s in (1, 2))}
    again = subprocess.run(_sweep(root), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 finished, 0 to run" in again.stdout
    assert {p: open(p).read() for p in launches} == launches  # Nothing was launched.
    table_only = subprocess.run([sys.executable, "-m", "ltx.cli", "sweep", f"--root={root}",
                                 "--table"], capture_output=True, text=True, timeout=120)
    assert table_only.returncode == 0 and "digits_lt_la__tiny=1" in table_only.stdout


def test_plots_of_an_axis_and_of_the_test_distributions(tmp_path):
    """write_plots on rows as collect() makes them: a line per cell against the `ir` axis."""
    rows = []
    for method in ("ce", "balpoe"):
        for ir in ("10", "50", "100"):
            row = {"cell": f"digits_lt_{method}__ir={ir}", "seeds": [1, 2]}
            row.update({c: (50.0 + int(ir) / 10, 1.0) for c in sweep.COLUMNS})
            row["distributions"] = {"forward-50": (40.0, 2.0), "uniform": (50.0, 1.0)}
            rows.append(row)
    written = sweep.write_plots(str(tmp_path), rows)
    assert sorted(os.path.basename(p) for p in written) == [
        "groups.png", "vs_ir.png", "vs_test_distribution.png"]
    assert all(os.path.getsize(p) > 1000 for p in written)


def test_shifted_columns_are_sample_accuracies_with_test_time_ones_where_evaluated(tmp_path):
    """The table's test-distribution columns read each report's sample accuracy (the references'
    headline) and, where every seed has one, the test-time aggregation's."""
    finals = {c: 90.0 for c in sweep.COLUMNS}
    for seed, (plain, learned) in enumerate([(80.0, 84.0), (82.0, 86.0)], start=1):
        workdir = tmp_path / "digits_lt_sade" / f"seed{seed}"
        (workdir / "eval").mkdir(parents=True)
        (workdir / "final_metrics.json").write_text(json.dumps(finals))
        report = {"distributions": {"forward-50": {"plain": {"top1_samples": plain,
                                                             "top1_all": 10.0}}},
                  "test_time": {"distributions": {"forward-50": {
                      "report": {"top1_samples": learned}}}}}
        (workdir / "eval" / "report.json").write_text(json.dumps(report))
    (row,) = sweep.collect(str(tmp_path))
    assert row["distributions"]["forward-50"] == pytest.approx((81.0, 1.0))
    assert row["distributions"]["forward-50 test-time"] == pytest.approx((85.0, 1.0))
