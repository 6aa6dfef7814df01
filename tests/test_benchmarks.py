"""The benchmark scripts of experiments/ run end to end at a tiny size (their numbers are for
the closing notes, not asserted here)."""

import importlib.util
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
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


@pytest.mark.slow
def test_pytorch_comparison_times_ltx_alone_without_torch(capsys):
    # CI has no PyTorch: the driver still runs ltx's worker process through its rounds. With
    # torch (--torch-python) the same rows add the PyTorch rate and the ratio.
    script = _script("benchmark_vs_pytorch")
    if script._torch_python("") is not None:
        pytest.skip("torch is importable here; the ltx-only path is CI's")
    assert script.main(["--layouts", "single", "--batch", "2", "--image-size", "8",
                        "--classes", "10", "--rounds", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "ltx only" in out
    row = re.search(r"single\s+params=\s*([\d,]+) ltx=\s*([\d.]+) img/s", out)
    # ResNet-32 for 10 classes (He et al.'s 0.46M): 0.46M convolution weights, BatchNorm
    # gamma/beta and the 64 x 10 + 10 head.
    assert row and int(row.group(1).replace(",", "")) == 464154
    assert float(row.group(2)) > 0


@pytest.mark.slow
def test_a_flag_is_timed_against_the_default_with_the_losses_compared(capsys):
    # A flag that sets XLA's own default changes nothing: the two workers' losses agree exactly.
    script = _script("benchmark_vs_pytorch")
    assert script.main(["--layouts", "single", "--batch", "2", "--image-size", "8",
                        "--classes", "10", "--rounds", "2", "--steps", "1",
                        "--flags-vs-default=--xla_cpu_enable_fast_math=false"]) == 0
    out = capsys.readouterr().out
    assert "ltx with --xla_cpu_enable_fast_math=false against ltx" in out
    row = re.search(r"flagged/ltx=([\d.]+) .* max \|loss difference\|=(\S+)", out)
    assert row and float(row.group(1)) > 0
    assert float(row.group(2)) == 0.0


def test_weight_gradient_formulations_agree_with_xla(capsys):
    script = _script("benchmark_weight_gradient")
    assert script.main(["--batch", "2", "--rounds", "1", "--repeats", "1",
                        "--shapes", "8,4,6,1;8,4,8,2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("H=")]
    assert len(rows) == 2
    for row in rows:
        differences = re.findall(r"diff (\S+)\)", row)
        assert len(differences) == 4 and all(float(d) < 1e-5 for d in differences)


@pytest.mark.slow
def test_decoding_benchmark_compares_tfds_records_with_the_same_jpegs_as_files(
        capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTX_CACHE_DIR", str(tmp_path))
    data_dir = os.path.join(ROOT, "tests", "fixtures", "tfds", "data")
    _script("benchmark_decoding").main(["--tfds_data_dir", data_dir, "--images", "16",
                                        "--batch", "8", "--pairs", "1"])
    out = capsys.readouterr().out
    for source in ("tfds", "files"):
        rates = re.findall(rf"pair 1 {source}: \w+, .*: ([\d,]+) images/s", out)
        assert len(rates) == 4 and all(float(r.replace(",", "")) > 0 for r in rates), out


@pytest.mark.slow
def test_decoding_benchmark_compares_jpeg_files_with_record_shards(capsys):
    _script("benchmark_decoding").main(["--records", "--images", "16", "--batch", "8",
                                        "--pairs", "1", "--shorter_side", "64"])
    out = capsys.readouterr().out
    assert "as records of shorter side 64" in out
    for source in ("files", "records"):
        rates = re.findall(rf"pair 1 {source}: \w+, .*: ([\d,]+) images/s", out)
        assert len(rates) == 4 and all(float(r.replace(",", "")) > 0 for r in rates), out


@pytest.mark.slow
def test_packed_benchmark_prints_a_row_per_layout_form_and_pack(capsys):
    _script("benchmark_packed").main(["step", "--tiny", "--steps", "1", "--batch", "8",
                                      "--layouts", "resnet32x1", "--packs", "1,2",
                                      "--forms", "loop,vmap"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| resnet32x1")]
    assert [tuple(c.strip() for c in row.strip("|").split("|")[1:3]) for row in rows] == [
        ("loop", "1"), ("loop", "2"), ("vmap", "1"), ("vmap", "2")]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3].replace(",", "")) > 0
