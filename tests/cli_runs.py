"""A config through the command-line tools, as a user runs it: `python -m ltx.train`, then
`ltx-eval` and `ltx-predict` on its workdir, each in its own process (the environment, with the
test session's fake devices and compilation cache, is inherited)."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from helpers import CONFIG_DIR, load_config
from ltx.data import datasets


def run_tool(args, timeout=600):
    """`python <args>` in a subprocess; the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)


def _ok(result, what):
    assert result.returncode == 0, f"{what} failed:\n{result.stderr[-4000:]}"


def train(name, arg, workdir, *overrides):
    """Trains `configs/<name>.py:<arg>` into `workdir` with `ltx.train`; its final metrics."""
    config = os.path.join(CONFIG_DIR, f"{name}.py")
    _ok(run_tool(["-m", "ltx.train", f"--config={config}:{arg}", f"--workdir={workdir}",
                  *overrides]), f"ltx-train {name}:{arg}")
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return json.load(f)


def evaluate(workdir):
    """`ltx-eval --nopictures` on a finished workdir; its eval/report.json."""
    _ok(run_tool(["-m", "ltx.cli", "eval", f"--workdir={workdir}", "--nopictures"]), "ltx-eval")
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        return json.load(f)


def digit_images(folder, count=3):
    """Writes the first `count` digits-LT test images as PNG files into `folder`; their labels."""
    split = datasets.build(load_config("digits_lt_ce").data).test
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        image = split.source[int(split.indices[i])]["image"]
        Image.fromarray(np.asarray(image)[..., 0]).save(os.path.join(folder, f"digit{i}.png"))
    return split.labels[:count]


def predict(workdir, folder, top_k=3):
    """`ltx-predict --top_k` on the images of `folder`: {file name: [(class, probability)]}."""
    result = run_tool(["-m", "ltx.cli", "predict", f"--workdir={workdir}", str(folder),
                       f"--top_k={top_k}"])
    _ok(result, "ltx-predict")
    found = {}
    for line in result.stdout.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and name.endswith(".png"):
            found[os.path.basename(name)] = [
                (c, float(p)) for c, p in re.findall(r"(\S+) \(([0-9.]+)\)", rest)]
    return found


def check_train_eval_predict(name, arg, tmp_path):
    """Trains, evaluates and predicts with configs/<name>.py:<arg>; checks what each tool wrote
    and returns (final metrics, report)."""
    workdir = str(tmp_path / name)
    final = train(name, arg, workdir)
    method = load_config(name, arg).method.name
    assert final["method"] == method and math.isfinite(final["nll"])
    assert 0 <= final["top1_all"] <= 100
    report = evaluate(workdir)
    assert report["meta"]["method"] == method
    labels = digit_images(tmp_path / "images")
    found = predict(workdir, tmp_path / "images")
    assert sorted(found) == [f"digit{i}.png" for i in range(len(labels))]
    for ranked in found.values():
        probs = [p for _, p in ranked]
        assert len(ranked) == 3 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0 + 1e-3
    return final, report
