"""Fusion of class-balanced experts (Sharma et al., GCPR 2020, "Long-tailed recognition using
class-balanced experts").

Each expert k owns a disjoint subset of the C classes (`masks[k]`, bool [E, C]; together they cover
every class) and has local logits of its own width:

- trained with a reject class (`reject=True`, the official code): [N, K_k + 1], its K_k classes in
  ascending global class id and the reject class last. Before fusion the reject logit gets
  + log((1 + r) / 2), r = the expert's reject undersampling ratio (`open_ratios`), to undo the
  training prior (`ltx.methods.cbe.loss.reject_logit_correction`).
- trained with outlier exposure (`reject=False`): [N, K_k], no reject entry.

Fusions:

- `expert_distributions`: each expert's posterior over all C classes, the reject mass spread
  uniformly over the classes it does not own.
- `soft_voting`: log of the mean of those distributions.
- `kl_fusion`: the distribution q minimizing sum_k KL(p_k || A_k q), by EM.
- `expert_selection` / `selected_experts`: per sample, the expert most confident that the sample is
  its own.
- `oracle`: routed by the true label (the paper's upper bound).
- `fit_stacking` / `apply_stacking`: multinomial logistic regression on the experts' log-probs.
- `fit_joint_calibration` / `apply_joint_calibration`: the official `jointCalibration.py`.

Only joint calibration is in the official code (`saurabhsharma1993/class-balanced-experts`); the
other fusions are written from the paper's description.

Labels are global, in [0, C). Masks are static (NumPy); everything else may be traced. Outputs are
log-probabilities [N, C] (stacking: logits) computed in float32 at least.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltx.losses import input_checks as checks
from ltx.methods.cbe.loss import reject_logit_correction

# log 0 of the classes an expert does not own in `expert_selection` and `oracle`: finite, so that
# sums and means stay finite, and exp() of it is exactly 0 in float32.
LOG_ZERO = -1e9
FUSIONS = ("soft_voting", "kl_fusion", "expert_selection", "stacking", "joint_calibration")
REJECT_ONLY_FUSIONS = ("kl_fusion", "joint_calibration")  # They need the reject class.


# --------------------------------------------------------------------------------------------
# Argument checks and shared pieces.
# --------------------------------------------------------------------------------------------


def _check_masks(masks, fn: str) -> np.ndarray:
    checks.require_concrete(masks, "masks", fn)
    shape = np.shape(masks)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{fn}: masks must be a non-empty bool [E, C] (experts, classes), got "
                         f"shape {shape}")
    masks = checks.check_class_mask(masks, fn, "masks", shape, "[E, C]")
    empty = np.flatnonzero(~masks.any(axis=1))
    if empty.size:
        raise ValueError(f"{fn}: masks[{int(empty[0])}] selects no class; every expert needs at "
                         "least one class")
    owners = masks.sum(axis=0)
    shared = np.flatnonzero(owners > 1)
    if shared.size:
        raise ValueError(f"{fn}: classes {shared[:8].tolist()}{' ...' if shared.size > 8 else ''} "
                         "belong to more than one expert; expected disjoint masks")
    missing = np.flatnonzero(owners == 0)
    if missing.size:
        raise ValueError(f"{fn}: classes {missing[:8].tolist()}"
                         f"{' ...' if missing.size > 8 else ''} belong to no expert; expected "
                         "masks covering all C classes")
    return masks


def _check_open_ratios(open_ratios, fn: str, num_experts: int):
    """open_ratios as a list of E scalars (Python numbers or arrays)."""
    ratios = checks.as_array(open_ratios)
    if ratios.ndim == 0:
        checks.check_positive(open_ratios, "open_ratios", fn)
        return [open_ratios] * num_experts
    if tuple(ratios.shape) != (num_experts,):
        raise ValueError(f"{fn}: open_ratios has shape {tuple(ratios.shape)}; expected a scalar "
                         f"or one ratio per expert, [E] = ({num_experts},)")
    checks.check_positive(ratios, "open_ratios", fn)
    return [ratios[k] for k in range(num_experts)]


def _check_experts(expert_logits, masks, fn: str, *, reject: bool, open_ratios=None):
    """Checks the experts' logits against the masks.

    Returns (list of [N, w_k] logits in the common compute dtype, masks, ratios or None)."""
    masks = _check_masks(masks, fn)
    num_experts, num_classes = masks.shape
    if isinstance(expert_logits, (jax.Array, np.ndarray)) or not isinstance(
            expert_logits, Sequence):
        raise ValueError(f"{fn}: expert_logits must be a list of E arrays [N, K_k + 1] (or "
                         f"[N, K_k] without reject), got {type(expert_logits).__name__}; experts "
                         "have different widths")
    if len(expert_logits) != num_experts:
        raise ValueError(f"{fn}: expert_logits has {len(expert_logits)} experts but masks has "
                         f"E = {num_experts} rows")
    if not isinstance(reject, (bool, np.bool_)):
        raise ValueError(f"{fn}: reject must be a Python bool, got {reject!r}")
    layout = "[N, K_k + 1]" if reject else "[N, K_k]"
    zs = []
    for k, z in enumerate(expert_logits):
        z = checks.check_logits(z, fn, (2,), layout, f"expert_logits[{k}]")
        width = int(masks[k].sum()) + (1 if reject else 0)
        if z.shape[1] != width:
            what = (f"K_k + 1 = {width} (its {width - 1} classes and the reject class last)"
                    if reject else f"K_k = {width} (its classes; reject=False)")
            raise ValueError(f"{fn}: expert_logits[{k}] has {z.shape[1]} columns; masks[{k}] "
                             f"expects {what}")
        if z.shape[0] != expert_logits[0].shape[0]:
            raise ValueError(f"{fn}: expert_logits[{k}] has {z.shape[0]} samples but "
                             f"expert_logits[0] has {expert_logits[0].shape[0]}; expected the "
                             "same N samples for every expert")
        zs.append(z)
    if reject and num_experts == 1:
        raise ValueError(f"{fn}: a single expert owns every class, so its reject class has no "
                         "class to stand for; expected E >= 2 with reject=True")
    dtype = checks.compute_dtype(*zs)
    zs = [z.astype(dtype) for z in zs]
    ratios = None
    if reject and open_ratios is not None:
        ratios = _check_open_ratios(open_ratios, fn, num_experts)
    return zs, masks, ratios


def _local_log_probs(zs, ratios, reject: bool):
    """Each expert's log-softmax over its own width, the reject logit corrected first."""
    if reject:
        zs = [reject_logit_correction(z, open_ratio=r) for z, r in zip(zs, ratios)]
    return [jax.nn.log_softmax(z, axis=-1) for z in zs]


def _to_global(parts, masks: np.ndarray) -> jax.Array:
    """Concatenates each expert's own-class columns [N, K_k] into [N, C] in global class order."""
    order = np.concatenate([np.flatnonzero(m) for m in masks])  # Global class of each column.
    return jnp.concatenate(parts, axis=-1)[:, np.argsort(order)]


def _scatter(values: jax.Array, mask: np.ndarray, fill) -> jax.Array:
    """[N, K] values at the mask's classes of an [N, C] array, fill ([N] or scalar) elsewhere."""
    index = np.flatnonzero(mask)
    full = jnp.zeros((values.shape[0], mask.size), values.dtype).at[:, index].set(values)
    fill = jnp.broadcast_to(jnp.asarray(fill, values.dtype)[..., None], (values.shape[0], 1))
    return jnp.where(mask, full, fill)


def _log_distributions(log_probs, masks: np.ndarray, reject: bool) -> jax.Array:
    """[E, N, C] log of each expert's posterior over all classes (see `expert_distributions`)."""
    out = []
    for lp, mask in zip(log_probs, masks):
        num_own = int(mask.sum())
        if reject:
            fill = lp[:, num_own] - np.log(mask.size - num_own)
        else:
            fill = -jnp.inf
        out.append(_scatter(lp[:, :num_own], mask, fill))
    return jnp.stack(out)


def _own_log_distributions(zs, masks: np.ndarray) -> jax.Array:
    """[E, N, C]: log-softmax over each expert's own classes only, LOG_ZERO elsewhere."""
    return jnp.stack([_scatter(jax.nn.log_softmax(z[:, :int(m.sum())], axis=-1), m, LOG_ZERO)
                      for z, m in zip(zs, masks)])


def _normalize(log_q: jax.Array) -> jax.Array:
    return log_q - jax.nn.logsumexp(log_q, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Distributions, soft voting, KL fusion.
# --------------------------------------------------------------------------------------------


def expert_distributions(expert_logits, masks, *, reject: bool = True,
                         open_ratios=16) -> jax.Array:
    """Each expert's posterior over all C classes, float [E, N, C]; every row sums to 1.

    With a reject class, expert k's softmax over its K_k + 1 corrected logits gives its own classes
    their probabilities, and the reject probability is spread uniformly over the C - K_k classes
    it does not own:

      P_k[n, c] = p_k[n, c]                     c owned by k
                = p_k[n, reject] / (C - K_k)    otherwise

    With `reject=False` (outlier exposure) P_k is the softmax over the K_k classes, 0 elsewhere.
    The uniform spread of the reject mass is the paper's description, not official code.

    Args:
      expert_logits: list of E float arrays, [N, K_k + 1] (reject last) or [N, K_k].
      masks: static bool [E, C], the experts' classes: disjoint, covering all C classes.
      reject: whether the experts have a reject class (static).
      open_ratios: each expert's reject undersampling ratio r > 0, a scalar or [E] (16 on
        ImageNet-LT; 16, 8, 8 on Places-LT). Unused without reject.

    Returns:
      float [E, N, C] probabilities (float32 or wider).
    """
    fn = "expert_distributions"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    return jnp.exp(_log_distributions(_local_log_probs(zs, ratios, reject), masks, reject))


def soft_voting(expert_logits, masks, *, reject: bool = True, open_ratios=16) -> jax.Array:
    """Log of the mean of the experts' distributions (`expert_distributions`), [N, C].

      log q[n, c] = log( (1 / E) sum_k P_k[n, c] ),  renormalized to sum to 1

    computed in the log domain. Written from the paper's description (not in the official code).

    Args:
      expert_logits, masks, reject, open_ratios: as `expert_distributions`.

    Returns:
      float [N, C] normalized log-probabilities (float32 or wider).
    """
    fn = "soft_voting"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    return _soft_voting(_local_log_probs(zs, ratios, reject), masks, reject)


def _soft_voting(log_probs, masks, reject):
    log_dists = _log_distributions(log_probs, masks, reject)
    return _normalize(jax.nn.logsumexp(log_dists, axis=0))


def kl_fusion(expert_logits, masks, *, reject: bool = True, open_ratios=16,
              num_iterations: int = 200) -> jax.Array:
    """The distribution over all classes that best explains every expert, [N, C] log-probs.

    Expert k's local distribution p_k over its K_k classes and the reject class is compared with
    A_k q, the candidate q over C classes collapsed onto the expert's partition (its own classes
    as they are, the total mass of all other classes as the reject entry):

      q* = argmin_q  sum_k KL(p_k || A_k q)

    Solved per sample with EM fixed-point iterations, each of which does not increase the
    objective: the responsibilities of expert k are p_k[c] for its own classes c and
    p_k[reject] q_c / sum_{c' not owned by k} q_c' for the others, and q_new is their mean over
    the experts. The start is the soft-voting solution (which is one EM step from the uniform q).
    Written from the paper's description (not in the official code).

    Convergence is linear and slows down when every expert puts much mass on its reject class
    (e.g. uninformative experts with r = 16: one more iteration after 200 can still move q by
    ~1e-4); raise num_iterations there. Every iteration keeps the order of each expert's own
    classes (q_c is proportional to p_k[c] within expert k's classes at the optimum), so the
    argmax only depends on how the mass is split between the experts.

    Args:
      expert_logits: list of E float arrays [N, K_k + 1], reject class last.
      masks: static bool [E, C], disjoint, covering all C classes.
      reject: must be True (the collapse needs the reject entry).
      open_ratios: scalar or [E] reject undersampling ratios, as `expert_distributions`.
      num_iterations: static int >= 0, EM iterations after the soft-voting start.

    Returns:
      float [N, C] normalized log-probabilities (float32 or wider).
    """
    fn = "kl_fusion"
    if isinstance(reject, (bool, np.bool_)) and not reject:
        raise ValueError(f"{fn}: reject={reject!r}; KL fusion compares each expert's reject "
                         "probability with the mass of the classes it does not own, so it needs "
                         "experts with a reject class (reject=True)")
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, (int, np.integer)) \
            or num_iterations < 0:
        raise ValueError(f"{fn}: num_iterations must be an int >= 0, got {num_iterations!r}")
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    log_probs = _local_log_probs(zs, ratios, True)
    own = jnp.stack([_scatter(lp[:, :int(m.sum())], m, 0.0)
                     for lp, m in zip(log_probs, masks)])  # [E, N, C], own classes valid.
    log_reject = jnp.stack([lp[:, -1] for lp in log_probs])  # [E, N]
    owned = masks[:, None, :]  # [E, 1, C], static.
    log_num_experts = np.log(masks.shape[0])

    def step(_, log_q):
        others = jnp.where(owned, -jnp.inf, log_q[None])  # [E, N, C]
        log_other_mass = jax.nn.logsumexp(others, axis=-1, keepdims=True)  # [E, N, 1]
        spread = log_reject[:, :, None] + others - log_other_mass
        resp = jnp.where(owned, own, spread)
        return _normalize(jax.nn.logsumexp(resp, axis=0) - log_num_experts)

    return jax.lax.fori_loop(0, num_iterations, step, _soft_voting(log_probs, masks, True))


# --------------------------------------------------------------------------------------------
# Expert selection and the oracle.
# --------------------------------------------------------------------------------------------


def selected_experts(expert_logits, masks, *, reject: bool = True, open_ratios=16) -> jax.Array:
    """Per sample, the expert most confident that the sample is one of its classes, int32 [N].

    With a reject class: the expert with the lowest corrected reject probability; without
    (`reject=False`): the expert with the highest maximum softmax probability over its classes.
    Ties go to the lower expert index. Written from the paper's description.

    Args:
      expert_logits, masks, reject, open_ratios: as `expert_distributions`.

    Returns:
      int32 [N] in [0, E).
    """
    fn = "selected_experts"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    return _selected(_local_log_probs(zs, ratios, reject), reject)


def _selected(log_probs, reject):
    if reject:
        return jnp.argmin(jnp.stack([lp[:, -1] for lp in log_probs]), axis=0).astype(jnp.int32)
    return jnp.argmax(jnp.stack([jnp.max(lp, axis=-1) for lp in log_probs]),
                      axis=0).astype(jnp.int32)


def _pick(own_log_dists: jax.Array, experts: jax.Array) -> jax.Array:
    """own_log_dists [E, N, C] at expert experts[n] for every sample n -> [N, C]."""
    return jnp.take_along_axis(own_log_dists, experts[None, :, None], axis=0)[0]


def expert_selection(expert_logits, masks, *, reject: bool = True, open_ratios=16) -> jax.Array:
    """Per sample, the selected expert's distribution over its own classes, [N, C] log-probs.

    The expert is `selected_experts`; its softmax over its own K_k classes only (the reject entry
    dropped and the rest renormalized, i.e. log_softmax of its class logits) fills its classes,
    and every other class gets LOG_ZERO = -1e9 (a finite log 0, so argmax and sums stay
    well defined; exp of it is 0). Written from the paper's description.

    Args:
      expert_logits, masks, reject, open_ratios: as `expert_distributions`.

    Returns:
      float [N, C] log-probabilities (float32 or wider).
    """
    fn = "expert_selection"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    experts = _selected(_local_log_probs(zs, ratios, reject), reject)
    return _pick(_own_log_distributions(zs, masks), experts)


def oracle(expert_logits, masks, labels, *, reject: bool = True, open_ratios=16) -> jax.Array:
    """The paper's upper bound: each sample goes to the expert that owns its true class.

    That expert's softmax over its own K_k classes fills them, every other class gets LOG_ZERO
    (as `expert_selection`), so the prediction is the expert's best own class. The reject
    correction does not change the result (it only moves the reject logit, which is dropped);
    open_ratios is accepted for a uniform signature.

    Args:
      expert_logits, masks, reject, open_ratios: as `expert_distributions`.
      labels: int [N] global labels in [0, C).

    Returns:
      float [N, C] log-probabilities (float32 or wider).
    """
    fn = "oracle"
    zs, masks, _ = _check_experts(expert_logits, masks, fn, reject=reject,
                                  open_ratios=open_ratios)
    labels = checks.check_labels(labels, fn, zs[0].shape[0], masks.shape[1])
    owner = np.argmax(masks, axis=0).astype(np.int32)  # [C], the expert of each class.
    # One-hot product, not owner[labels], so it stays valid on batch-sharded labels.
    experts = jnp.sum(jax.nn.one_hot(labels, masks.shape[1], dtype=jnp.int32) * owner, axis=-1)
    return _pick(_own_log_distributions(zs, masks), experts)


# --------------------------------------------------------------------------------------------
# Stacking.
# --------------------------------------------------------------------------------------------


def _check_steps(value, name: str, fn: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _stacking_features(zs, ratios, reject):
    return jnp.concatenate(_local_log_probs(zs, ratios, reject), axis=-1)


def _stacking_logits(params, features):
    return features @ params["kernel"].astype(features.dtype) + params["bias"].astype(
        features.dtype)


def fit_stacking(expert_logits, masks, labels, *, reject: bool = True, open_ratios=16,
                 num_steps: int = 500, learning_rate: float = 0.05,
                 weight_decay: float = 1e-4) -> dict:
    """Fits a stacking classifier on the experts' outputs (multinomial logistic regression).

    Features are the concatenated corrected local log-probabilities of the experts (log-softmax
    over each expert's K_k + 1 outputs after the reject correction, or K_k without reject), width
    D = sum_k width_k. The model is logits = features @ W + b with W [D, C] and b [C], both
    starting at zero (the uniform prediction), trained full-batch on the given (validation) split
    with Adam on

      mean_n CE(logits_n, y_n) + (weight_decay / 2) ||W||^2

    for num_steps steps inside one jitted `lax.scan`. Written from the paper's description (not
    in the official code).

    Args:
      expert_logits: list of E float arrays [N, K_k + 1] (or [N, K_k] without reject).
      masks: static bool [E, C], disjoint, covering all C classes.
      labels: int [N] in [0, C).
      reject, open_ratios: as `expert_distributions`.
      num_steps: static int >= 0, full-batch gradient steps.
      learning_rate: Adam step size > 0.
      weight_decay: L2 coefficient >= 0 on W (not on b).

    Returns:
      {"kernel": float [D, C], "bias": float [C]}, for `apply_stacking`.
    """
    fn = "fit_stacking"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    labels = checks.check_labels(labels, fn, zs[0].shape[0], masks.shape[1])
    num_steps = _check_steps(num_steps, "num_steps", fn, minimum=0)
    checks.check_positive(learning_rate, "learning_rate", fn)
    checks.check_positive(weight_decay, "weight_decay", fn, allow_zero=True)
    features = _stacking_features(zs, ratios, reject)
    return _train_stacking(features, labels, jnp.asarray(learning_rate, features.dtype),
                           jnp.asarray(weight_decay, features.dtype),
                           num_classes=masks.shape[1], num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps"))
def _train_stacking(features, labels, learning_rate, weight_decay, *, num_classes, num_steps):
    dtype = features.dtype
    params = {"kernel": jnp.zeros((features.shape[1], num_classes), dtype),
              "bias": jnp.zeros((num_classes,), dtype)}
    targets = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    optimizer = optax.adam(learning_rate)

    def loss_fn(p):
        log_probs = jax.nn.log_softmax(_stacking_logits(p, features), axis=-1)
        nll = -jnp.mean(jnp.sum(targets * log_probs, axis=-1))
        return nll + 0.5 * weight_decay * jnp.sum(jnp.square(p["kernel"]))

    def step(carry, _):
        p, state = carry
        grads = jax.grad(loss_fn)(p)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)
    return params


def apply_stacking(params: dict, expert_logits, masks, *, reject: bool = True,
                   open_ratios=16) -> jax.Array:
    """The stacking classifier's logits, [N, C] (`fit_stacking`'s model; softmax them).

    Args:
      params: {"kernel": [D, C], "bias": [C]} from `fit_stacking` (same reject and open_ratios).
      expert_logits, masks, reject, open_ratios: as `expert_distributions`.

    Returns:
      float [N, C] logits (float32 or wider).
    """
    fn = "apply_stacking"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=reject,
                                       open_ratios=open_ratios)
    features = _stacking_features(zs, ratios, reject)
    width, num_classes = features.shape[1], masks.shape[1]
    if not isinstance(params, dict) or set(params) != {"kernel", "bias"}:
        got = f"keys {sorted(params)}" if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{fn}: params must be the dict {{'kernel', 'bias'}} from fit_stacking, "
                         f"got {got}")
    if tuple(np.shape(params["kernel"])) != (width, num_classes) or tuple(
            np.shape(params["bias"])) != (num_classes,):
        raise ValueError(f"{fn}: params have kernel {tuple(np.shape(params['kernel']))} and bias "
                         f"{tuple(np.shape(params['bias']))}; expected [D, C] = "
                         f"{(width, num_classes)} and [C] = ({num_classes},) for these experts")
    return _stacking_logits(params, features)


# --------------------------------------------------------------------------------------------
# Joint calibration (official).
# --------------------------------------------------------------------------------------------


def _calibrated_log_probs(params, corrected, masks):
    """Official `CalibrateExperts.forward` on reject-corrected logits -> [N, C] log-probs."""
    own = []
    for p, z, m in zip(params, corrected, masks):
        probs = jax.nn.log_softmax(p["scale"] * z + p["bias"], axis=-1)
        own.append(probs[:, :int(m.sum())])  # Drop the reject probability.
    return _normalize(_to_global(own, masks))  # Renormalize across all C classes.


def _check_calibration_params(params, zs, fn):
    expected = [(z.shape[1],) for z in zs]
    ok = isinstance(params, (list, tuple)) and len(params) == len(zs) and all(
        isinstance(p, dict) and set(p) == {"scale", "bias"}
        and tuple(np.shape(p["scale"])) == w and tuple(np.shape(p["bias"])) == w
        for p, w in zip(params, expected))
    if not ok:
        raise ValueError(f"{fn}: params must be fit_joint_calibration's E = {len(zs)} dicts "
                         "{'scale', 'bias'} with shapes [K_k + 1] = "
                         f"{[w[0] for w in expected]}, got {jax.tree.map(np.shape, params)}")


def fit_joint_calibration(expert_logits, masks, labels, *, open_ratios=16, num_epochs: int = 60,
                          batch_size: int = 256, learning_rate: float = 0.1,
                          momentum: float = 0.9, weight_decay: float = 5e-4,
                          lr_step_epochs: int = 30, seed=0):
    """Fits the official joint calibration of experts with a reject class (`jointCalibration.py`).

    Per expert k two learnable vectors a_k, b_k over its K_k + 1 outputs, both initialised to 1.
    After the reject correction z_k' (+ log((1 + r_k) / 2) on the reject logit):

      p_k = softmax(a_k * z_k' + b_k),  reject probability dropped,
      q[n, c] = p_k(n)[c] for the expert k owning c,  renormalized over all C classes,
      loss = mean_n -log q[n, y_n]

    trained as the official script: SGD (momentum 0.9, coupled weight decay 5e-4 on a and b,
    PyTorch style), learning rate 0.1 decayed by 0.1 every 30 epochs (StepLR), minibatches of 256
    reshuffled every epoch (the last one smaller, as PyTorch's DataLoader; here drawn with
    `seed`). The official script stops when the training accuracy has not improved for 30 epochs
    and keeps the best-accuracy epoch; here a fixed `num_epochs` replaces the early stopping and
    the last parameters are returned. The whole fit (`lax.fori_loop` over epochs of a jitted
    minibatch `lax.scan`) runs as one jitted computation.

    Args:
      expert_logits: list of E float arrays [N, K_k + 1], reject class last.
      masks: static bool [E, C], disjoint, covering all C classes.
      labels: int [N] in [0, C), the calibration (validation) split.
      open_ratios: scalar or [E] reject undersampling ratios (16; Places medium/few 8).
      num_epochs, batch_size, lr_step_epochs: static ints >= 1.
      learning_rate, momentum, weight_decay: SGD hyperparameters (> 0, >= 0, >= 0).
      seed: int or PRNG key for the shuffling.

    Returns:
      params: tuple of E dicts {"scale": [K_k + 1], "bias": [K_k + 1]}, for
      `apply_joint_calibration`.
    """
    fn = "fit_joint_calibration"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=True,
                                       open_ratios=open_ratios)
    num_samples = zs[0].shape[0]
    labels = checks.check_labels(labels, fn, num_samples, masks.shape[1])
    num_epochs = _check_steps(num_epochs, "num_epochs", fn)
    batch_size = _check_steps(batch_size, "batch_size", fn)
    lr_step_epochs = _check_steps(lr_step_epochs, "lr_step_epochs", fn)
    checks.check_positive(learning_rate, "learning_rate", fn)
    checks.check_positive(momentum, "momentum", fn, allow_zero=True)
    checks.check_positive(weight_decay, "weight_decay", fn, allow_zero=True)
    if num_samples < 1:
        raise ValueError(f"{fn}: expert_logits have no samples (N = 0); expected N >= 1")
    corrected = tuple(reject_logit_correction(z, open_ratio=r) for z, r in zip(zs, ratios))
    key = seed if isinstance(seed, jax.Array) and jnp.issubdtype(
        seed.dtype, jax.dtypes.prng_key) else jax.random.key(seed)
    dtype = corrected[0].dtype
    hyper = tuple(jnp.asarray(v, dtype) for v in (learning_rate, momentum, weight_decay))
    return _train_joint_calibration(corrected, labels, key, *hyper, masks=_Static(masks),
                                    num_epochs=num_epochs, batch_size=batch_size,
                                    lr_step_epochs=lr_step_epochs)


class _Static:
    """A NumPy array as a hashable static jit argument (compared by value)."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)

    def __hash__(self):
        return hash((self.array.shape, self.array.tobytes()))

    def __eq__(self, other):
        return isinstance(other, _Static) and self.array.shape == other.array.shape and bool(
            (self.array == other.array).all())


@functools.partial(jax.jit, static_argnames=("masks", "num_epochs", "batch_size",
                                             "lr_step_epochs"))
def _train_joint_calibration(corrected, labels, key, learning_rate, momentum, weight_decay, *,
                             masks, num_epochs, batch_size, lr_step_epochs):
    masks = masks.array
    dtype = corrected[0].dtype
    num_samples = labels.shape[0]
    num_batches = -(-num_samples // batch_size)
    padded = num_batches * batch_size
    params = tuple({"scale": jnp.ones((z.shape[1],), dtype), "bias": jnp.ones((z.shape[1],), dtype)}
                   for z in corrected)
    # StepLR: the rate of epoch e is lr * 0.1 ** (e // lr_step_epochs), applied per step.
    schedule = optax.exponential_decay(1.0, transition_steps=lr_step_epochs * num_batches,
                                       decay_rate=0.1, staircase=True)

    def scaled_schedule(count):
        return learning_rate * schedule(count)

    # PyTorch SGD: g + wd * p, then the momentum buffer b = m b + g, then p -= lr b.
    optimizer = optax.chain(optax.add_decayed_weights(weight_decay),
                            optax.trace(decay=momentum),
                            optax.scale_by_learning_rate(scaled_schedule))
    num_classes = masks.shape[1]

    def loss_fn(p, batch_logits, batch_labels, valid):
        log_q = _calibrated_log_probs(p, batch_logits, masks)
        nll = -jnp.sum(jax.nn.one_hot(batch_labels, num_classes, dtype=dtype) * log_q, axis=-1)
        return jnp.sum(valid * nll) / jnp.sum(valid)

    def batch_step(carry, index):
        p, state = carry
        take = jnp.clip(index, 0, num_samples - 1)
        valid = (index < num_samples).astype(dtype)
        grads = jax.grad(loss_fn)(p, tuple(z[take] for z in corrected), labels[take], valid)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    def epoch(e, carry):
        order = jax.random.permutation(jax.random.fold_in(key, e), num_samples)
        # Pad with out-of-range indices: those samples get weight 0 in the last minibatch.
        order = jnp.concatenate([order, jnp.full((padded - num_samples,), num_samples,
                                                 order.dtype)])
        carry, _ = jax.lax.scan(batch_step, carry, order.reshape(num_batches, batch_size))
        return carry

    params, _ = jax.lax.fori_loop(0, num_epochs, epoch, (params, optimizer.init(params)))
    return params


def apply_joint_calibration(params, expert_logits, masks, *, open_ratios=16) -> jax.Array:
    """Jointly calibrated fusion, [N, C] normalized log-probabilities (official `CalibrateExperts`).

    Args:
      params: from `fit_joint_calibration` (E dicts {"scale", "bias"} of shape [K_k + 1]).
      expert_logits: list of E float arrays [N, K_k + 1], reject class last.
      masks: static bool [E, C], disjoint, covering all C classes.
      open_ratios: scalar or [E] reject undersampling ratios, as used in the fit.

    Returns:
      float [N, C] log-probabilities (float32 or wider): see `fit_joint_calibration`.
    """
    fn = "apply_joint_calibration"
    zs, masks, ratios = _check_experts(expert_logits, masks, fn, reject=True,
                                       open_ratios=open_ratios)
    _check_calibration_params(params, zs, fn)
    corrected = [reject_logit_correction(z, open_ratio=r) for z, r in zip(zs, ratios)]
    params = [{k: jnp.asarray(v, z.dtype) for k, v in p.items()} for p, z in zip(params, corrected)]
    return _calibrated_log_probs(params, corrected, masks)
