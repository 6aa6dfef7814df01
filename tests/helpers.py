"""Shared test helpers: tiny configs (the configs' own `tiny=1` argument) and tree comparisons."""

import os

import jax
import numpy as np
import pytest

from ltx import config_lib, parts as parts_lib, predict, report, stats, steps, trainer
from ltx.outputs import Outputs

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


def load_config(name, arg=None):
    """`configs/<name>.py` with the config argument `arg`."""
    return config_lib.load_config_file(os.path.join(CONFIG_DIR, f"{name}.py"), arg)


def tiny_config(name="digits_lt_balpoe", epochs=1, arg=""):
    """`configs/<name>.py:tiny=1,epochs=<epochs>[,arg]`: a 1-block trunk at a quarter of the
    widths, no periodic evaluation, synchronous checkpoints: seconds per epoch."""
    extra = f",{arg}" if arg else ""
    return load_config(name, f"tiny=1,epochs={epochs}{extra}")


def wrap_train_steps(monkeypatch, wrap):
    """Makes every train step built from now on `wrap(step_fn)` (tests stop or spoil a run
    mid-way through the trainer's own loop)."""
    make_train_step = steps.make_train_step
    monkeypatch.setattr(steps, "make_train_step",
                        lambda *args, **kwargs: wrap(make_train_step(*args, **kwargs)))


def nan_loss_from_step(monkeypatch, step):
    """Makes the train steps built from now on report a NaN loss from their `step`-th call on
    (parameters still update), so that training stops with `faults.Diverged` there."""
    calls = []

    def wrap(step_fn):
        def nan_from(state, batch, rng, teacher_variables):
            state, metrics = step_fn(state, batch, rng, teacher_variables)
            calls.append(1)
            if len(calls) >= step:
                metrics = dict(metrics, loss_sum=np.float32(np.nan))
            return state, metrics
        return nan_from

    wrap_train_steps(monkeypatch, wrap)


def initial_state(config):
    """A freshly initialised train state of `config` (a template to restore checkpoints into)."""
    parts = parts_lib.build(config)
    return trainer.initial_state(config, parts, parts_lib.make_plan(config, parts),
                                 steps.make_mesh(), pretrained=False)


def restore_state(workdir):
    """The newest checkpoint of a single-run workdir as a whole train state (optimizer too)."""
    from ltx import checkpointing, workdirs
    checkpointer = checkpointing.Checkpointer(str(workdir), async_save=False)
    try:
        return checkpointer.restore(initial_state(workdirs.load_config(str(workdir))))[0]
    finally:
        checkpointer.close()


def train(config, workdir):
    """Trains `config` in `workdir`; (final metrics, `ltx.predictor.Predictor`)."""
    return trainer.train_and_evaluate(config, str(workdir))


def assert_trees_close(a, b, rtol, atol):
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# NumPy references of the losses' building blocks, shared by the loss tests.

def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_kl_batchmean(log_q, log_p):
    return np.sum(np.exp(log_q) * (log_q - log_p)) / log_q.shape[0]


def np_ce(logits, labels, weights=None):
    nll = -np_log_softmax(np.asarray(logits, np.float64))[np.arange(len(labels)), labels]
    if weights is None:
        return nll.mean()
    w = np.asarray(weights, np.float64)[labels]
    return (w * nll).sum() / w.sum()


def random_outputs(experts, seed=0, router=None, teacher=False):
    """(Outputs of E experts with logits in [-30, 30] [E, 16, 10] (and router [16, K], a
    teacher equal to the expert mean), labels [16]) for the method tests."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-30, 30, size=(experts, 16, 10)).astype(np.float32)
    router_out = None if router is None else rng.normal(size=(16, router)).astype(np.float32)
    teacher_logits = logits.mean(0) if teacher else None
    return Outputs(logits, router_out, teacher_logits), rng.integers(0, 10, 16)


class ScriptedRng:
    """A stand-in for np.random.Generator that replays preset draws: `integers(...)` returns
    `integers`, `random()` the next of `randoms`. It feeds a host transform the random parameters
    another path drew."""

    def __init__(self, integers=0, randoms=()):
        self._integers, self._randoms = integers, list(randoms)

    def integers(self, *args, **kwargs):
        return self._integers

    def random(self):
        return self._randoms.pop(0)


def test_images(dataset, count=12):
    split = dataset.test
    records = [split.source[int(i)] for i in split.indices[:count]]
    return np.stack([r["image"] for r in records])


def check_finished_workdir(workdir, final, method_name):
    """ltx-eval, ltx-predict and ltx.stats on a finished workdir agree with what it trained."""
    evaluated = report.evaluate_workdir(workdir, pictures=False)
    assert evaluated["meta"]["method"] == method_name
    # The report's predictor is the run's final model: the same test numbers as final_metrics.
    for key in ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece"):
        assert evaluated["uniform"]["ensemble"][key] == pytest.approx(final[key], abs=1e-4), key
    assert os.path.isfile(os.path.join(workdir, "eval", "report.md"))

    predictor = predict.Predictor.from_workdir(workdir)
    images = test_images(predictor.dataset)
    probs = predictor.predict_proba(images)
    assert probs.shape == (len(images), predictor.num_classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    # Images through the prediction API = the same images through the evaluation path.
    _, logits, _ = predictor.predictor.predict("test")
    np.testing.assert_allclose(probs, jax.nn.softmax(logits[:len(images)], -1), atol=2e-5)

    numbers = stats.workdir_stats(workdir)
    assert numbers["method"] == method_name and numbers["params"] > 0 and numbers["gflops"] > 0
    return evaluated
