"""ACE: ally complementary experts (Cai, Wang and Hwang, ICCV 2021).

Recipe (the authors' code `winterxx/ACE`, incomplete as released; docs/methods/ace.md). The
home: `loss` (planner split and expert losses), `fusion` (group average and rescaling),
`config` (config helpers); this module plans the experts and builds the method.


- model: a shared trunk one stage deeper than RIDE/SADE/BalPoE's (CIFAR ResNet-32: stem + stages
  1-2; ImageNet ResNets: stem + layer1-3, i.e. `model.num_shared_stages` 2 and 3), every expert
  its own last stage at full width (64 channels on CIFAR, 512 planes on ImageNet), global average
  pooling and an LWS classifier `scales * (W f + b)` (`head='lws'`, forced by this method).
- distribution-aware planner (`plan`): classes ranked by descending training count, r_j the share
  of images in the classes ranked j and below; threshold e_k splits at the j with
  r_j > e_k >= r_{j+1}. Expert 0 targets every class, expert k >= 1 the classes ranked
  [j_{e_k}, C). `method.thresholds` (e_1, e_2, ...) are strictly decreasing, num_experts =
  1 + len(thresholds). Released values: CIFAR-100-LT ratio 100 (0.3, 0.03), ratio 50
  (0.4, 0.1), CIFAR-10-LT (0.3, 0.05), ImageNet-LT and iNaturalist (0.4, 0.1) (`THRESHOLDS`).
- loss: `loss.ace_loss`, per expert the cross-entropy over all C classes on the samples of
  its target classes plus ||z_k[S_k][:, IC_k]||_F / |IC_k| on its interfering (head-side)
  classes, summed over experts. With Mixup (the trainer's `mixup_loss`) each label set picks its
  own subsets and the losses mix as lambda L(y_a) + (1 - lambda) L(y_b), as ACE's
  `mix_up_group`.
- which loss trains what: only expert 0's loss reaches the shared trunk. The official loop
  backpropagates L_0, then sets requires_grad=False on every parameter outside the medium/few
  branches and backpropagates L_1 + L_2; here experts 1.. read `stop_gradient` of the shared
  features (the trunk's `stop_gradient_experts`, set by `wrap_model`), the same gradients in one
  pass.
- distribution-adaptive optimizer (`expert_lr_scales`): expert k's branch learns at lr * s_k,
  s_k the share of training images in its target classes (`lr_scaling='linear'`, the default;
  'sqrt' gives sqrt(s_k), 'uniform' all 1, 'threshold' the threshold e_k itself); expert 0 and
  the shared trunk at lr (s_0 = 1). **Assumption**: the paper describes the learning pace scaled
  by each expert's data share, but its `SGD_group` optimizer is not in any commit, so the exact
  rule (share, its square root, momentum or weight-decay handling) is inferred. The official
  `get_optimizer(cfg, model)` sees the config but not the class counts, so it may well use the
  thresholds (0.4, 0.1) rather than the exact shares (r_{j_e} is just above e: 0.417 and 0.147
  for digits-LT's (0.4, 0.1)); 'threshold' gives that reading. The scale multiplies the whole
  SGD update (weight decay and momentum included), as a PyTorch parameter group's lr does.
- aggregation (`aggregate`): ACE's group average. Many-shot classes (targeted by expert 0 only)
  take z_0, the classes of expert 1 not in expert 2 take (z_0 + m z_1) / 2, the few-shot classes
  (z_0 + m z_1 + f z_2) / 3, with m, f = mean_c ||W_0[:, c]|| / mean_{c in TC_k} ||W_k[:, c]||
  from the LWS kernels (the LWS `scales` are ignored, as in the code; `fusion.
  ace_rescale_factors` and `group_average`). Without parameters (the train step's accuracy log)
  m = f = 1, as the official training log.
- known test prior (`correct_prior`): ltx treats the group average as a balanced prediction and
  adds log q (`ltx.methods.prior_correction`). ACE itself has no such correction; the tail experts
  and the rescaling aim at a balanced test set, but expert 0 is plain cross-entropy, so the
  aggregate is only approximately balanced.

Class order. ACE's code re-indexes the classes by descending frequency (its JSON files) and its
planner and aggregation cut index ranges. Here the masks are defined by frequency rank, so any
label order works: `plan` ranks the classes by descending count (ties keep the lower class index
first, a stable sort), applies the planner on the ranked counts and maps the masks back to the
original class indices; `ace_loss`, `group_average` and `ace_rescale_factors` take masks, not
index ranges. On sorted counts this is exactly ACE's split.

Code vs paper, and where ltx differs from the released code:
- the released CIFAR-100-LT ratio-100 config trains without Mixup ('default' combiner), while the
  ratio-50, CIFAR-10, ImageNet-LT and iNaturalist configs use Mixup alpha 0.3 with the final 21
  epochs mixup-free (`config.mixup_epochs`);
- whether the LWS `fc` (W, b) is trainable depends on the missing `get_optimizer` (Bag of Tricks'
  LWS freezes it); this cannot be verified, so W, b and the scales train jointly here;
- the planner needs frequency-sorted labels in the code and is hard-wired to three experts
  (many/medium/few index ranges); here it works on any order (above) and any number of
  thresholds, and thresholds that give two experts the same classes raise an error (the code
  silently skips a threshold it cannot place);
- the per-expert learning rates are an assumption (above);
- Bag of Tricks' CIFAR transforms normalise with the ImageNet mean/std; ltx keeps its own
  normalisation (a per-channel affine of the input, absorbed by the first BatchNorm);
- CIFAR-LT subsets come from Cui et al.'s JSON in the code, ltx builds them LDAM-style;
- the official code keeps the best epoch on the test set (`best_model.pth`); ltx reports the
  last epoch.
"""

from __future__ import annotations

import jax
import numpy as np

from ltx.losses import input_checks as checks
from ltx.methods import base
from ltx.methods.ace.fusion import ace_rescale_factors, group_average
from ltx.methods.ace.loss import ace_loss, ace_split

LR_SCALINGS = ("linear", "sqrt", "uniform", "threshold")

# The released planner thresholds (TRAIN.OPTIMIZER.EXPERT of winterxx/ACE's configs). CIFAR-10-LT
# uses (0.3, 0.05) at ratios 100 and 50.
THRESHOLDS = {
    "cifar100_lt_ir100": (0.3, 0.03),
    "cifar100_lt_ir50": (0.4, 0.1),
    "cifar10_lt": (0.3, 0.05),
    "imagenet_lt": (0.4, 0.1),
    "inaturalist2018": (0.4, 0.1),
}


def _thresholds(value) -> tuple[float, ...]:
    """`method.thresholds` as a tuple of floats, strictly decreasing in [0, 1)."""
    try:
        thresholds = tuple(float(e) for e in np.atleast_1d(np.asarray(value, np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"method.thresholds={value!r}; expected a sequence of shares of the "
                         "training set in [0, 1), e.g. (0.4, 0.1)") from None
    if np.asarray(value).ndim > 1:
        raise ValueError(f"method.thresholds={value!r}; expected a flat sequence of shares")
    bad = [e for e in thresholds if not 0.0 <= e < 1.0]
    if bad:
        raise ValueError(f"method.thresholds={thresholds!r} has {bad[0]!r} outside [0, 1); "
                         "expected shares of the training set, e.g. (0.4, 0.1)")
    if any(a <= b for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"method.thresholds={thresholds!r}; expected strictly decreasing shares "
                         "(expert 1 medium + few, expert 2 few, ...)")
    return thresholds


def plan(class_counts, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """ACE's distribution-aware planner for classes in any order.

    Args:
      class_counts: [C] training images per class (any order, >= 0, positive sum).
      thresholds: strictly decreasing shares e_1 > e_2 > ... in [0, 1).

    Returns:
      (target_masks bool [E, C], shares float64 [E]) with E = 1 + len(thresholds):
      target_masks[k] are expert k's target classes (row 0 all True) and shares[k] the fraction
      of training images in them (shares[0] = 1). The masks are `loss.ace_split` of the counts
      ranked by descending frequency (stable on ties), mapped back to the given class order.

    Raises:
      ValueError: on bad counts or thresholds, or when two experts would get the same target
        classes (thresholds too close together, or above the share of every class but the most
        frequent one), naming the thresholds.
    """
    thresholds = _thresholds(thresholds)
    counts = checks.check_counts(class_counts, "ace.plan", positive=False)
    checks.require_concrete(counts, "class_counts", "ace.plan")
    order = np.argsort(-counts, kind="stable")  # Rank r -> class index.
    ranked = ace_split(counts[order], thresholds)
    masks = np.empty_like(ranked)
    masks[:, order] = ranked
    for k in range(1, masks.shape[0]):
        same = [i for i in range(k) if np.array_equal(masks[i], masks[k])]
        if same:
            raise ValueError(
                f"method.thresholds={thresholds!r} give experts {same[0]} and {k} the same "
                f"{int(masks[k].sum())} target classes for these class counts (threshold "
                f"{thresholds[k - 1]!r} is too close to the previous one, or not below the share "
                "of all classes but the most frequent); choose thresholds that give distinct "
                "splits")
    shares = (masks * counts).sum(axis=1) / counts.sum()
    shares[0] = 1.0
    return masks, shares


def lr_scales(shares, lr_scaling: str = "linear", thresholds=None) -> tuple[float, ...]:
    """Per-expert learning-rate multipliers from the target-class shares (`plan`).

    'linear': the shares; 'sqrt': their square roots; 'uniform': all 1; 'threshold': 1 for
    expert 0, then the planner thresholds e_1, e_2, ... (needs `thresholds`).
    """
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"method.lr_scaling={lr_scaling!r}; expected one of {LR_SCALINGS}")
    shares = np.asarray(shares, np.float64)
    if lr_scaling == "linear":
        scales = shares
    elif lr_scaling == "sqrt":
        scales = np.sqrt(shares)
    elif lr_scaling == "uniform":
        scales = np.ones_like(shares)
    else:
        if thresholds is None or len(thresholds) != shares.size - 1:
            raise ValueError(f"lr_scaling='threshold' needs the {shares.size - 1} thresholds, "
                             f"got {thresholds!r}")
        scales = np.array([1.0, *thresholds])
    return tuple(float(s) for s in scales)


def head_kernels(params) -> jax.Array:
    """The experts' LWS classifier kernels [E, F, C] from the model parameters."""
    try:
        return params["experts"]["head"]["kernel"]
    except (KeyError, TypeError):
        raise ValueError("ACE's aggregate reads the experts' LWS kernels at "
                         "params['experts']['head']['kernel'] [E, F, C]; these parameters have "
                         "none (the model must be the method's: `Method.model(trunk)`, "
                         "head='lws')") from None


def make_aggregate(target_masks: np.ndarray):
    """ACE's group average `(outputs, params=None) -> logits [B, C]` (see the module docstring)."""
    masks = np.asarray(target_masks, bool)

    def aggregate(outputs, params=None):
        if params is None:  # The training log: all factors 1.
            return group_average(outputs.logits, masks)
        scales = ace_rescale_factors(head_kernels(params), masks)
        return group_average(outputs.logits, masks, scales)

    return aggregate


def build(method_config, class_counts) -> dict:
    """Fields: thresholds (e_1 > e_2 > ...; num_experts = 1 + len), lr_scaling ('linear',
    'sqrt', 'uniform' or 'threshold'; default 'linear'), num_experts (optional, checked)."""
    cfg = method_config
    if "thresholds" not in cfg:
        raise ValueError("config.method.thresholds is missing; ACE needs the planner's shares, "
                         "e.g. (0.4, 0.1)")
    lr_scaling = cfg.lr_scaling
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"method.lr_scaling={lr_scaling!r}; expected one of {LR_SCALINGS}")
    masks, shares = plan(class_counts, cfg.thresholds)
    num_experts = masks.shape[0]
    stop_gradient = tuple(range(1, num_experts))

    def loss(outputs, labels, epoch):
        del epoch  # No schedule; Mixup's unmixed tail is the trainer's (config.mixup_epochs).
        return ace_loss(outputs.logits, labels, target_masks=masks, where=outputs.mask)

    return dict(
        num_experts=num_experts,
        loss=loss,
        aggregate=make_aggregate(masks),
        # Treated as balanced (see the module docstring).
        correct_prior=base.balanced_prior_correction,
        wrap_model=lambda trunk: trunk.clone(head="lws", stop_gradient_experts=stop_gradient),
        model_additions=dict(head="lws", stop_gradient_experts=stop_gradient),
        expert_lr_scales=lr_scales(shares, lr_scaling, _thresholds(cfg.thresholds)),
    )
