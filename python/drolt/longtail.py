"""drolt.longtail: the long-tail baselines of the C++ library
(drolt/longtail_losses.hpp, posthoc.hpp, weight_balancing.hpp; docs/longtail.md)
as operators: compositions of tensor ops, differentiable by autograd.

Losses take logits [N, C] and integer targets [N]; `weight` is an optional [C]
class weight; reduction "mean" (weighted, as cross_entropy), "sum" or "none"."""
import torch

from ._ops import ops


def _counts(counts):
    return [int(c) for c in torch.as_tensor(counts).tolist()]


def focal_loss(logits, targets, gamma=1.0, weight=None, reduction="mean", validate_values=True):
    """Focal loss (Lin et al. 2017): -(1 - p_y)^gamma log p_y; gamma = 0 is cross-entropy."""
    return ops.focal_loss(logits, targets, float(gamma), weight, reduction, validate_values)


def ldam_margins(counts, max_margin=0.5):
    """LDAM margins Delta_c ~ n_c^(-1/4), the largest max_margin (float32 [C])."""
    return ops.ldam_margins(_counts(counts), float(max_margin))


def ldam_loss(logits, targets, margins, scale=30.0, weight=None, reduction="mean",
              validate_values=True):
    """LDAM (Cao et al. 2019): cross-entropy on logits - scale * Delta_y at the target."""
    return ops.ldam_loss(logits, targets, margins, float(scale), weight, reduction,
                         validate_values)


def drw_class_weights(counts, epoch, start_epoch, beta=0.9999):
    """DRW: class-balanced (effective-number) weights from start_epoch on, None before."""
    w = ops.drw_class_weights(_counts(counts), int(epoch), int(start_epoch), float(beta))
    return None if w.numel() == 0 else w


def log_class_prior(counts):
    """log pi_c of the training counts (a class without samples counts as one), float64."""
    return ops.log_class_prior(_counts(counts))


def logit_adjusted_loss(logits, targets, log_prior, tau=1.0, weight=None, reduction="mean",
                        validate_values=True):
    """Logit-adjusted loss (Menon et al. 2021): cross-entropy on logits + tau log pi."""
    return ops.logit_adjusted_loss(logits, targets, log_prior, float(tau), weight, reduction,
                                   validate_values)


def logit_adjust(logits, counts, tau=1.0):
    """Post-hoc logit adjustment: logits - tau log pi."""
    return ops.logit_adjust(logits, _counts(counts), float(tau))


def tau_normalize(weight, tau):
    """tau-normalisation of a classifier weight [C, D]: w_c / ||w_c||^tau."""
    return ops.tau_normalize(weight, float(tau))


def nearest_class_mean(features, centroids, valid=None):
    """Cosine nearest-class-mean scores [N, C] (-inf for classes without a centroid)."""
    return ops.nearest_class_mean(features, centroids, valid)


@torch.no_grad()
def max_norm_(weight, thresholds):
    """Weight balancing's MaxNorm: each row w_c <- w_c min(1, r_c / ||w_c||), in
    place; thresholds [C] or one number."""
    if not torch.is_tensor(thresholds):
        thresholds = torch.tensor([float(thresholds)], dtype=torch.float64)
    ops.max_norm_(weight, thresholds)
    return weight
