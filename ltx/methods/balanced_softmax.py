"""Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
NeurIPS 2020). See docs/methods/balanced_softmax.md.

Training models the label distribution shift: the softmax of the training set is taken over
n_j exp(z_j), i.e. cross-entropy on z + log n, and the model predicts with the plain logits z,
which then estimate the class-balanced posterior (official code
`jiawei-ren/BalancedMetaSoftmax-Classification`, `loss/BalancedSoftmaxLoss.py`: logits plus the
log of the per-class training counts, `F.cross_entropy` with its mean).

Relation to logit adjustment: log n_j = log pi_j + log N, and softmax cross-entropy does not
change when the same constant is added to every logit, so this loss equals Menon et al.'s logit
adjusted loss with tau = 1, ltx's 'la' (`ltx.methods.balpoe.build_la`, CE(z + log pi)) up to
the 1e-9 that 'la' adds inside its log (a relative change of 1e-9 / pi_j in the prior): the same
loss, the same gradients, the same training (tests/test_method_balanced_softmax.py proves all
three). Unlike 'la' it refuses classes without training images, where log n is -inf.

Not built: the Meta Sampler of BALMS (Balanced Softmax + Meta Sampler). The official BALMS runs
(`config/Places_LT/balms.yaml`, `run_networks.py: meta_forward`) retrain only the classifier on a
frozen feature model loaded from a finished run, and learn per-class sampling rates while doing
so: every step takes one differentiable SGD step of the classifier (the `higher` library) on the
training batch weighted by the sampler, scores the updated classifier by plain cross-entropy on a
class-balanced meta batch, and moves the rates by that meta-gradient (Adam). That needs a sampler
whose class distribution changes every step from a gradient, and a two-level train step; ltx's
samplers ('shuffle', 'class_balanced') are fixed and a `Method` is a loss and a model wrapper, so
the sampler would be a new shared piece of the data pipeline and the trainer, not a method
home. The papers' BALMS numbers are therefore not what these configs
reproduce; the docs say which quoted numbers are BALMS and which plain Balanced Softmax.

Recipe (official configs): CIFAR-10/100-LT (`config/CIFAR*_LT/balanced_softmax_imba200.yaml`):
ResNet-32 with a linear classifier, batch 512, SGD momentum 0.9 (no Nesterov), weight decay
5e-4, 13,000 iterations, lr warmed from 0.05 to 0.1 over 800 iterations then cosine to 0.
ImageNet-LT (`config/ImageNet_LT/balanced_softmax_resnet10.yaml`): ResNet-10, linear classifier,
batch 512, lr 0.2, wd 5e-4, cosine over 90 epochs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx.losses import input_checks as checks
from ltx.losses.classification import cross_entropy_unchecked
from ltx.methods import base


def balanced_softmax_loss(logits: jax.Array, labels: jax.Array, *, class_counts,
                          where=None) -> jax.Array:
    """Balanced Softmax cross-entropy, CE(z + log n, y).

      phi_j(z) = n_j exp(z_j) / sum_k n_k exp(z_k),   L = -(1/B) sum_i log phi_{y_i}(z_i)

    Args:
      logits: float [B, C] or [E, B, C] (each expert trained on the loss, averaged over E).
      labels: int [B] in [0, C).
      class_counts: [C] positive training images per class (concrete counts: log computed in
        float64, then cast).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar, float32 or wider.
    """
    fn = "balanced_softmax_loss"
    logits = checks.check_logits(logits, fn, (2, 3), "[B, C] or [E, B, C]")
    batch, num_classes = logits.shape[-2:]
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=True)
    xp = checks.array_module(counts)
    dtype = checks.compute_dtype(logits)
    where = checks.check_where(where, fn, batch)
    log_counts = jnp.asarray(xp.log(counts), dtype)
    return cross_entropy_unchecked(logits.astype(dtype) + log_counts, labels, where=where)


def build(method_config, class_counts) -> dict:
    """Balanced Softmax. Fields: num_experts (1; more trains each expert on the loss and
    predicts with the mean of their logits).

    The model's logits estimate the balanced posterior (a gLA expert with lambda 0, as 'la' with
    tau 1), so the test-prior correction is `logits + log q`.
    """
    num_experts = method_config.get("num_experts", 1)
    if not (isinstance(num_experts, int) and num_experts >= 1):
        raise ValueError(f"config.method.num_experts={num_experts!r}; expected an integer >= 1")
    counts = checks.check_counts(class_counts, "balanced_softmax", positive=True)

    def loss(outputs, labels, epoch):
        del epoch  # No schedule.
        return balanced_softmax_loss(outputs.logits, labels, class_counts=counts,
                                     where=outputs.mask)

    return dict(num_experts=num_experts, loss=loss,
                correct_prior=base.lambda_prior_correction(np.asarray(counts), 0.0),
                expert_lambdas=(0.0,) * num_experts)


def method_config(num_experts: int = 1) -> ml_collections.ConfigDict:
    """`config.method` of Balanced Softmax."""
    return ml_collections.ConfigDict(dict(name="balanced_softmax", num_experts=num_experts))


def official_cifar_epochs(num_train: int, *, batch_size: int = 512, iterations: int = 13000,
                          warmup_iterations: int = 800) -> tuple[int, int]:
    """(epochs, warmup epochs) of the official CIFAR recipe for `num_train` training images.

    The official `run_networks.py` turns iterations into epochs as ceil(iterations / batches per
    epoch), counting ceil(N / B) batches (the length of a PyTorch loader that keeps its last,
    smaller batch, its default), while each epoch then stops after floor(N / B) steps
    (`epoch_steps`); configs pair this with `data.last_batch='drop'`.
    """
    if num_train < 1 or batch_size < 1:
        raise ValueError(f"num_train={num_train}, batch_size={batch_size}; expected both >= 1")
    batches = -(-num_train // batch_size)
    return -(-iterations // batches), -(-warmup_iterations // batches)
