"""ltx.convert.layouts: the official checkpoints of tests/fixtures/torch, converted onto the
models of ltx's own configs, reproduce the logits the official code computed.

The torchvision ResNet-10 case is not the official file: its 5.4 M float32 weights (21.7 MB,
nearly all in the backbone every logit depends on) do not fit the fixtures' size budget and no
subset of them keeps the official logits. The test writes a state_dict in torchvision's layout
instead (as torch.save lays it out) and its logits come from
tests/fixtures/torch/torchvision_reference.py, torchvision's ResNet forward written in NumPy from
torchvision's architecture (checked against the official output, see the fixtures' README.md).
"""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_files as tf
from helpers import load_config
from ltx import config_lib, parts as parts_lib
from ltx.convert import arrays, layouts

FIXTURES = Path(__file__).parent / "fixtures" / "torch"

# case: (config, config argument, model overrides, number of classes, stage, scale of ltx's
# logits over the official ones: LDAM-DRW's model leaves s = 30 to its loss).
CASES = {
    "ride_resnet32_c100_3experts": ("cifar100_lt_ride", "", {}, 100, "experts", 1.0),
    "balpoe_resnet32_c100_3experts": ("cifar100_lt_balpoe", "", {}, 100, "", 1.0),
    "ldam_resnet32_c100": ("cifar100_lt_ldam_drw", "", {}, 100, "", 30.0),
    "torchvision_resnet10_in": ("imagenet_lt_ce", "arch=resnet10", {"head": "linear"}, 1000, "",
                                1.0),
}


def _torchvision_reference():
    """tests/fixtures/torch/torchvision_reference.py (a file of the fixtures, not a package)."""
    spec = importlib.util.spec_from_file_location("torchvision_reference",
                                                  FIXTURES / "torchvision_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{case: (.pth path, {x, x_nhwc, logits[, expert_logits], meta})}: the stored official
    cases, and the torchvision case written here with its NumPy reference logits."""
    out = {}
    for case in CASES:
        if case.startswith("torchvision"):
            continue
        with np.load(FIXTURES / f"{case}.npz") as z:
            data = {k: z[k] for k in z.files}
        out[case] = (str(FIXTURES / f"{case}.pth"), data)
    reference = _torchvision_reference()
    state_dict, x, logits = reference.case()
    path = tmp_path_factory.mktemp("torchvision") / "torchvision_resnet10_in.pth"
    tf.save(path, {k: tf.tensor(str(i), v) for i, (k, v) in enumerate(state_dict.items())})
    meta = {"source": "tests/fixtures/torch/torchvision_reference.py",
            "model": "torchvision ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000)"}
    out["torchvision_resnet10_in"] = (str(path), {"x": x, "logits": logits,
                                                  "meta": np.array(json.dumps(meta))})
    for _, data in out.values():
        data["x_nhwc"] = data["x"].transpose(0, 2, 3, 1)
    return out


def config_model(name, arg, overrides, stage):
    config = load_config(name, arg or None)
    if stage:
        config = dict((n, c) for n, c, _ in config_lib.stage_configs(config))[stage]
    config.model.update(overrides)
    return config


def converted(case, sources):
    name, arg, overrides, num_classes, stage, _ = CASES[case]
    config = config_model(name, arg, overrides, stage)
    _, model = parts_lib.build_method_and_model(config, np.full(num_classes, 10))
    path, data = sources[case]
    init = jax.device_get(model.init(jax.random.key(0, impl="rbg"),
                                     jnp.asarray(data["x_nhwc"][:1]), train=False))
    state_dict = arrays.load_state_dict(path)
    variables, report = layouts.convert(state_dict.arrays, init)
    return model, variables, report, state_dict


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_official_checkpoint_reproduces_the_official_logits(case, sources):
    model, variables, report, state_dict = converted(case, sources)
    data = sources[case][1]
    out = np.asarray(model.apply(variables, jnp.asarray(data["x_nhwc"]), train=False))
    out = out / CASES[case][-1]
    official = data.get("expert_logits", data["logits"][None])
    scale = np.abs(official).max()
    np.testing.assert_allclose(out, official, rtol=1e-5, atol=1e-5 * scale)  # Per expert.
    np.testing.assert_allclose(out.mean(0), data["logits"], rtol=1e-5, atol=1e-5 * scale)
    # Every source tensor is used or skipped with a reason; every ltx variable is filled.
    assert report.kept == []
    assert set(report.skipped) == {k for k in state_dict.arrays if "num_batches_tracked" in k}
    meta = json.loads(str(data["meta"]))
    assert meta  # The fixture says where it came from.


@pytest.mark.slow
def test_a_checkpoint_of_other_widths_names_both_shapes(sources):
    _, variables, _, state_dict = converted("ride_resnet32_c100_3experts", sources)
    config = config_model("cifar100_lt_balpoe", "", {}, "")  # Full widths: 32/64, not 24/48.
    _, model = parts_lib.build_method_and_model(config, np.full(100, 10))
    init = jax.device_get(model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 32, 32, 3)),
                                     train=False))
    with pytest.raises(ValueError, match=r"backbone\.layer2s\.0\.0\.conv1\.weight.* \(3, 3, 16, "
                                         r"24\).*has \(3, 3, 3, 16, 32\)|stack to"):
        layouts.convert(state_dict.arrays, init)


@pytest.mark.slow
def test_another_number_of_experts_is_named(sources):
    _, _, _, state_dict = converted("ride_resnet32_c100_3experts", sources)
    config = config_model("cifar100_lt_ride", "experts=4", {}, "experts")
    _, model = parts_lib.build_method_and_model(config, np.full(100, 10))
    init = jax.device_get(model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 32, 32, 3)),
                                     train=False))
    with pytest.raises(ValueError, match=r"experts \[0, 1, 2\].*the ltx model 4"):
        layouts.convert(state_dict.arrays, init)


@pytest.mark.slow
def test_single_backbone_goes_into_every_expert_and_another_head_is_kept(sources):
    """torchvision's ResNet-10 into a 3-expert BalPoE of 365 classes (Places-LT's init)."""
    _, _, _, state_dict = converted("torchvision_resnet10_in", sources)
    config = config_model("imagenet_lt_balpoe", "arch=resnet10", {"head": "linear"}, "")
    _, model = parts_lib.build_method_and_model(config, np.full(365, 10))
    init = jax.device_get(model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 64, 64, 3)),
                                     train=False))
    with pytest.raises(ValueError, match="fc.weight"):
        layouts.convert(state_dict.arrays, init)  # Strict: the 1000-class head does not fit.
    variables, report = layouts.convert(state_dict.arrays, init, keep_other_head=True)
    assert "params/experts/stage3/block0/conv1/kernel" in report.broadcast
    assert sorted(report.kept) == ["params/experts/head/dense/bias",
                                   "params/experts/head/dense/kernel"]
    assert "kept at its initial value" in report.skipped["fc.weight"]
    kernel = variables["params"]["experts"]["stage3"]["block0"]["conv1"]["kernel"]
    np.testing.assert_array_equal(kernel[0], kernel[2])  # The same backbone in every expert.
    np.testing.assert_array_equal(
        kernel[1], state_dict.arrays["layer4.0.conv1.weight"].transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_ride_router_tensors_drive_the_cascade_router_as_the_official_code(sources):
    """RIDE's expert-assignment tensors (`expert_help_pred_hidden_fcs.{i}`, the shared
    `expert_help_pred_fc`) on the RIDE fixture's trunk, against the official router formula
    written in NumPy: fc([top-k of the running-mean logits, relu(hidden_i(f_i / |f_i|))])."""
    config = config_model("cifar100_lt_ride", "", {}, "router")
    _, model = parts_lib.build_method_and_model(config, np.full(100, 10))
    path, data = sources["ride_resnet32_c100_3experts"]
    x = jnp.asarray(data["x_nhwc"])
    init = jax.device_get(model.init(jax.random.key(0, impl="rbg"), x[:1], train=False))
    state_dict = dict(arrays.load_state_dict(path).arrays)
    rng = np.random.default_rng(0)
    top_k, hidden = config.method.router_top_k, config.method.router_hidden
    for i in range(2):
        state_dict[f"backbone.expert_help_pred_hidden_fcs.{i}.weight"] = rng.normal(
            size=(hidden, 48)).astype(np.float32)
        state_dict[f"backbone.expert_help_pred_hidden_fcs.{i}.bias"] = rng.normal(
            size=hidden).astype(np.float32)
    state_dict["backbone.expert_help_pred_fc.weight"] = rng.normal(
        size=(1, top_k + hidden)).astype(np.float32)
    state_dict["backbone.expert_help_pred_fc.bias"] = rng.normal(size=1).astype(np.float32)
    variables, report = layouts.convert(state_dict, init)
    assert report.kept == [] and "params/router/output/kernel" in report.copied
    out = model.apply(variables, x, train=False)

    trunk_vars = {c: {k: v for k, v in tree.items() if k != "router"}
                  for c, tree in variables.items()}
    _, features = model.trunk.apply(trunk_vars, x, train=False, return_features=True)
    logits, features = np.asarray(out["logits"], np.float64), np.asarray(features, np.float64)
    expected = []
    for i in range(2):
        running = logits[:i + 1].mean(0)
        top = -np.sort(-running, axis=-1)[:, :top_k]
        f = features[i] / np.linalg.norm(features[i], axis=-1, keepdims=True)
        h = np.maximum(f @ state_dict[f"backbone.expert_help_pred_hidden_fcs.{i}.weight"].T
                       + state_dict[f"backbone.expert_help_pred_hidden_fcs.{i}.bias"], 0)
        z = np.concatenate([top, h], -1)
        expected.append(z @ state_dict["backbone.expert_help_pred_fc.weight"][0]
                        + state_dict["backbone.expert_help_pred_fc.bias"][0])
    np.testing.assert_allclose(np.asarray(out["router"]), np.stack(expected, -1), rtol=1e-4,
                               atol=1e-4)
    # The official logits are unchanged by the router.
    np.testing.assert_allclose(logits, data["expert_logits"], rtol=1e-5, atol=1e-3)
    state_dict["backbone.expert_help_pred_fcs.0.weight"] = np.zeros((1, 46), np.float32)
    _, report = layouts.convert(state_dict, init)
    assert "shares one output layer" in report.skipped["backbone.expert_help_pred_fcs.0.weight"]


def torchvision_shapes(blocks, bottleneck, groups=1, width_per_group=64, num_classes=1000):
    """{name: shape} of torchvision's ResNet / ResNeXt state dict, written from torchvision's
    architecture (`torchvision/models/resnet.py`: v1.5 bottlenecks, downsample = 1x1 conv + BN
    on the first block of a stage that changes stride or width)."""
    shapes = {}

    def conv(name, out, inp, k):
        shapes[f"{name}.weight"] = (out, inp, k, k)

    def bn(name, c):
        for param in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{param}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), 1):
        for b in range(count):
            stride = 2 if b == 0 and layer > 1 else 1
            p = f"layer{layer}.{b}"
            if bottleneck:
                width, out = int(planes * width_per_group / 64) * groups, planes * 4
                conv(f"{p}.conv1", width, inplanes, 1), bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width // groups, 3), bn(f"{p}.bn2", width)
                conv(f"{p}.conv3", out, width, 1), bn(f"{p}.bn3", out)
            else:
                out = planes
                conv(f"{p}.conv1", out, inplanes, 3), bn(f"{p}.bn1", out)
                conv(f"{p}.conv2", out, out, 3), bn(f"{p}.bn2", out)
            if b == 0 and (stride != 1 or inplanes != out):
                conv(f"{p}.downsample.0", out, inplanes, 1), bn(f"{p}.downsample.1", out)
            inplanes = out
    shapes["fc.weight"], shapes["fc.bias"] = (num_classes, inplanes), (num_classes,)
    return shapes


@pytest.mark.parametrize("arch,blocks,bottleneck,groups,width,params", [
    ("resnet50", (3, 4, 6, 3), True, 1, 64, 25_557_032),
    ("resnet152", (3, 8, 36, 3), True, 1, 64, 60_192_808),
    ("resnext50_32x4d", (3, 4, 6, 3), True, 32, 4, 25_028_904),
])
@pytest.mark.slow
def test_every_torchvision_tensor_has_its_ltx_variable(arch, blocks, bottleneck, groups, width,
                                                       params):
    """torchvision's published parameter counts; every tensor lands, every variable is filled,
    on a single backbone and on 3 experts sharing the stem and layer1-2."""
    shapes = torchvision_shapes(blocks, bottleneck, groups, width)
    state_dict = {k: np.zeros(v, np.int64 if k.endswith("tracked") else np.float32)
                  for k, v in shapes.items()}
    assert sum(int(np.prod(v)) for k, v in shapes.items()
               if not k.endswith(("running_mean", "running_var", "tracked"))) == params
    for num_experts in (1, 3):
        config = load_config("imagenet_lt_balpoe", f"arch={arch}")
        config.model.head = "linear"
        config.method.lambdas = (1.0, 0.0, -1.0)[:num_experts]
        _, model = parts_lib.build_method_and_model(config, np.full(1000, 10))
        target = jax.eval_shape(lambda: model.init(jax.random.key(0, impl="rbg"),
                                                   jnp.zeros((1, 64, 64, 3)), train=False))
        _, report = layouts.convert(state_dict, target)
        assert report.kept == []
        assert set(report.skipped) == {k for k in shapes if k.endswith("num_batches_tracked")}
        assert bool(report.broadcast) == (num_experts > 1)


def test_the_torchvision_case_is_laid_out_as_the_official_file(sources):
    """The written ResNet-10 state_dict has the entries of the official torchvision file, kept
    in tests/fixtures/torch as its stem (torchvision_resnet10_in_stem.pth): the same names in
    the same order, shapes and dtypes."""
    written = arrays.load_state_dict(sources["torchvision_resnet10_in"][0]).arrays
    stem = arrays.load_state_dict(str(FIXTURES / "torchvision_resnet10_in_stem.pth")).arrays
    assert len(written) == 74 and [k for k in written if k in stem] == list(stem)
    for name, value in stem.items():
        assert written[name].shape == value.shape and written[name].dtype == value.dtype, name
