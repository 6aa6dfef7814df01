"""Every file in configs/: loads, documents its launch command, and builds its model's shapes."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from ltx import config_lib, models, optim, stats
from ltx.data import datasets

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))


def test_the_config_folder_is_not_empty():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"digits_lt_balpoe.py", "cifar100_lt_balpoe.py", "imagenet_lt_balpoe.py",
            "inaturalist2018_balpoe.py", "places_lt_balpoe.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_documents_its_launch_command(path):
    config = config_lib.load_config_file(path)
    module_doc = open(path).read().split('"""')[1]
    assert f"--config=configs/{os.path.basename(path)}" in module_doc
    assert "Reported" in module_doc or "digits_lt" in path  # The paper's number, or why none.
    if config.data.name == "list_files":  # A custom dataset: its classes come from the data.
        config.data.num_classes = 10
    num_classes, image_shape = datasets.spec(config.data)
    model = models.build(config.model, num_classes=num_classes,
                         num_experts=stats.num_experts_of(config.method))
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0, impl="rbg"),
                           jnp.zeros((1,) + image_shape), train=False))
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2,) + image_shape),
                                                  train=False), shapes)
    assert logits.shape == (stats.num_experts_of(config.method), 2, num_classes)
    assert config.batch_size > 0 and config.num_epochs > 0
    assert all(0 < e <= config.num_epochs for e in config.schedule.decay_epochs)


def test_cifar_configs_take_the_imbalance_ratio():
    config = config_lib.load_config_file(os.path.join(CONFIG_DIR, "cifar100_lt_balpoe.py"),
                                         "ir=50")
    assert config.data.imbalance_ratio == 50.0 and config.mixup_alpha == 0.4


def test_large_scale_recipes_match_the_references():
    x50 = config_lib.load_config_file(os.path.join(CONFIG_DIR, "imagenet_lt_balpoe.py"),
                                      "arch=resnext50_32x4d")
    assert x50.model.name == "resnext50_32x4d" and x50.method.lambdas == (1.0, -0.25, -1.5)
    assert (x50.num_epochs, x50.batch_size, x50.optimizer.lr) == (180, 64, 0.025)
    assert x50.schedule.name == "cosine" and x50.mixup_alpha == 0.3
    # Doubling the global batch doubles the learning rate.
    x50.batch_size = 128
    assert optim.base_learning_rate(x50.optimizer, x50.batch_size) == pytest.approx(0.05)
    inat = config_lib.load_config_file(os.path.join(CONFIG_DIR, "inaturalist2018_balpoe.py"))
    assert inat.method.lambdas == (2.0, 0.0, -2.0) and inat.optimizer.lr == 0.2
    places = config_lib.load_config_file(os.path.join(CONFIG_DIR, "places_lt_ce.py"))
    assert places.model.name == "resnet152" and places.optimizer.lr_multipliers == (
        ("head", 10.0),)
    assert places.schedule.decay_epochs == (10, 20)
