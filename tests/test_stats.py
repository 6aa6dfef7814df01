"""Tests for ltx.stats: parameter counts and thop-style forward FLOPs, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from ltx import stats
from ltx.models.multi_expert import MultiExpertImageNetResNet, MultiExpertResNet
from ltx.models.resnet_imagenet import ARCHITECTURES

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
RIDE_WIDTHS = (64, 128, 192, 384)


def resnet32_conv_macs(size=32, widths=(16, 32, 64), blocks=5, cin=3):
    """Analytic MACs of the CIFAR ResNet-32 convolutions at size x size."""
    total = size * size * widths[0] * 9 * cin  # stem
    prev = widths[0]
    for i, width in enumerate(widths):
        if i:
            size //= 2
        for b in range(blocks):
            c_in = prev if b == 0 else width
            total += size * size * width * 9 * (c_in + width)
        prev = width
    return total


# Reference points (issue 4): RIDE's tables use thop's MAC-based GFLOPs.
@pytest.mark.parametrize("name, params, gflops", [
    ("resnet50", 25.6e6, 4.1), ("resnext50_32x4d", 25.0e6, 4.26)])
def test_imagenet_reference_points(name, params, gflops):
    s = stats.model_stats(MultiExpertImageNetResNet(1000, **ARCHITECTURES[name]), (224, 224, 3))
    assert s["params"] == pytest.approx(params, rel=0.01)
    assert s["gflops"] == pytest.approx(gflops, rel=0.01)


def test_resnet50_matches_thop_and_torchvision():
    s = stats.model_stats(MultiExpertImageNetResNet(1000), (224, 224, 3))
    assert s["params"] == 25_557_032  # torchvision resnet50
    # Convolutions: torchvision's "4.09 GFLOPS"; + fc; + BN at 2 ops per element (thop).
    assert s["conv_macs"] == 4_087_136_256 and s["dense_macs"] == 2048 * 1000
    assert s["bn_ops"] == 2 * 11_113_984
    assert s["ops"] == 4_111_412_224 and s["gflops"] == s["ops"] / 1e9
    assert s["batch_stats"] == 53_120


@pytest.mark.parametrize("classes, params", [(10, 464_154), (100, 470_004)])
def test_resnet32_reference_point(classes, params):
    s = stats.model_stats(MultiExpertResNet(classes), (32, 32, 3))
    assert s["params"] == params
    assert s["conv_macs"] == resnet32_conv_macs() == 68_861_952
    assert s["dense_macs"] == 64 * classes
    # BN: 2 ops per element of every BN output (stem, 2 per block).
    assert s["bn_ops"] == 2 * (1024 * 16 * 11 + 256 * 32 * 10 + 64 * 64 * 10)
    if classes == 10:  # The reference point: CIFAR-10 head.
        assert s["params"] == pytest.approx(0.46e6, rel=0.02)
        assert s["gflops"] == pytest.approx(0.069, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["vmap", "scan"])
def test_expert_counts_add_up(strategy):
    """Shared trunk once, each expert's branch once per expert, whichever strategy runs them."""
    def gflops(experts, shared=1):
        model = MultiExpertResNet(100, num_experts=experts, num_shared_stages=shared,
                                  widths=(16, 24, 48), head="cosine", expert_strategy=strategy)
        return stats.model_stats(model, (32, 32, 3))

    one, two, three = gflops(1), gflops(2), gflops(3)
    branch = two["gflops"] - one["gflops"]
    assert branch > 0
    assert three["gflops"] == pytest.approx(one["gflops"] + 2 * branch, rel=1e-9)
    assert three["dense_macs"] == 3 * 48 * 100  # cosine heads count F x C each
    independent = gflops(3, shared=0)
    assert independent["gflops"] == pytest.approx(3 * gflops(1, shared=0)["gflops"], rel=1e-9)


def test_ride_reduced_resnet50():
    """RIDE's experts: layer3/layer4 at 192/384 planes, shared through layer2."""
    def model(experts, widths=RIDE_WIDTHS):
        return MultiExpertImageNetResNet(1000, num_experts=experts, widths=widths, head="cosine",
                                         **ARCHITECTURES["resnet50"])

    s1, s3 = stats.model_stats(model(1), (224, 224, 3)), stats.model_stats(model(3), (224, 224, 3))
    full = stats.model_stats(model(1, (64, 128, 256, 512)), (224, 224, 3))
    assert s1["gflops"] < full["gflops"] and s1["params"] < full["params"]
    assert s1["dense_macs"] == 1536 * 1000
    # The trunk (stem + layer1 + layer2) is counted once.
    assert s3["gflops"] < 3 * s1["gflops"]


def test_num_experts_of():
    c = ml_collections.ConfigDict({"name": "balpoe", "lambdas": (1.0, 0.0, -1.0)})
    assert stats.num_experts_of(c) == 3
    c.num_experts = 4
    assert stats.num_experts_of(c) == 4
    with pytest.raises(ValueError, match="'ride'.*num_experts"):
        stats.num_experts_of(ml_collections.ConfigDict({"name": "ride"}))


@pytest.mark.slow
def test_command_line_prints_one_json_object():
    out = subprocess.run(
        [sys.executable, "-m", "ltx.cli", "stats", "--config=configs/digits_lt_balpoe.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["model"] == "resnet32" and result["num_experts"] == 3
    assert result["image_shape"] == [8, 8, 1] and result["num_classes"] == 10
    assert result["params"] > 0 and result["gflops"] > 0
    # digits-LT's BalPoE: 3 full-width experts (stages 1-2) on a shared stem + stage 0, 8x8 input.
    model = MultiExpertResNet(10, num_experts=3, head="cosine")
    assert result["params"] == stats.model_stats(model, (8, 8, 1))["params"]
