"""The benchmark scripts of experiments/ run end to end at a tiny size (their numbers are for
the closing notes, not asserted here)."""

import importlib.util
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accelerator_benchmark_prints_a_row_per_layout_dtype_and_device_count(capsys):
    _script("benchmark_accelerator").main(
        ["--tiny", "--layouts", "resnet32x1,resnet50x3", "--dtypes", "bfloat16",
         "--devices", "1,2", "--steps", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if re.match(r"\| resnet", line)]
    assert len(rows) == 2 * 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] in ("1", "2") and int(cells[3]) == 4 * int(cells[2])
        assert all(float(c.replace(",", "")) > 0 for c in cells[4:6])


def test_data_path_benchmark_prints_both_paths_and_their_ratio(capsys):
    _script("benchmark_data_path").main(["--images", "600", "--batches", "2", "--rounds", "1",
                                         "--autoaugment", "--rotation", "15"])
    out = capsys.readouterr().out
    rates = re.findall(r"([\d,]+) images/s", out)
    assert len(rates) == 2 and all(float(r.replace(",", "")) > 0 for r in rates)
    assert "ratio device / host" in out
