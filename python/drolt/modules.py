"""nn.Module forms mirroring the C++ classes: RobustCentroidLoss (with its
RadiusPolicy) and CentroidBank. Their state dicts use the C++ modules' names."""
import math

import torch
from torch import nn

from ._ops import ops
from .functional import robust_centroid_loss


class RadiusPolicy:
    """How the radius eps_c of each class is chosen (docs/math.md, "Radius policies").

    RadiusPolicy.shared(eps0): eps_c = eps0 (shared(0) is ERM);
    RadiusPolicy.sqrt_n(eps0): eps_c = eps0 / sqrt(n_c), n_c the training count;
    RadiusPolicy.learned(eps0): one trainable radius per class (the parameter
    "radii" of the module), effective radius max(raw, 0).
    """
    KINDS = ("shared", "sqrt_n", "learned")

    def __init__(self, kind, eps0):
        if kind not in self.KINDS:
            raise ValueError("drolt::RadiusPolicy: expected one of shared, sqrt_n, learned; "
                             "got '%s'" % (kind,))
        eps0 = float(eps0)
        if not (math.isfinite(eps0) and eps0 >= 0):
            raise ValueError("drolt::RadiusPolicy: expected a finite radius eps0 >= 0, got %g"
                             % eps0)
        self.kind, self.eps0 = kind, eps0

    @classmethod
    def shared(cls, eps0):
        return cls("shared", eps0)

    @classmethod
    def sqrt_n(cls, eps0):
        return cls("sqrt_n", eps0)

    @classmethod
    def learned(cls, eps0):
        return cls("learned", eps0)

    @classmethod
    def parse(cls, name, eps0):
        """"erm" (shared, eps0 = 0), "shared", "sqrtn" / "sqrt_n" / "sqrt-n", "learned"."""
        if name == "erm":
            return cls.shared(0.0)
        aliases = {"shared": "shared", "sqrtn": "sqrt_n", "sqrt_n": "sqrt_n", "sqrt-n": "sqrt_n",
                   "learned": "learned"}
        if name not in aliases:
            raise ValueError("drolt::RadiusPolicy::parse: expected one of erm, shared, sqrtn, "
                             "learned; got '%s'" % (name,))
        return cls(aliases[name], eps0)

    @property
    def is_learned(self):
        return self.kind == "learned"

    def __repr__(self):
        return "RadiusPolicy.%s(%g)" % (self.kind, self.eps0)


def _check_counts(counts, num_classes, where):
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or counts.shape[0] != num_classes:
        raise ValueError("%s: expected class counts of shape [%d], got %s"
                         % (where, num_classes, list(counts.shape)))
    if counts.dtype == torch.bool or counts.is_complex():
        raise ValueError("%s: expected integer class counts, got %s" % (where, counts.dtype))
    c = counts.detach().double()
    if not bool(torch.isfinite(c).all()) or bool((c < 0).any()) or not bool((c == c.round()).all()):
        raise ValueError("%s: expected finite whole-number class counts >= 0, got %s"
                         % (where, counts.tolist()))
    return counts.to(torch.long)


class RobustCentroidLoss(nn.Module):
    """The DRO-LT loss as a module (the C++ drolt::RobustCentroidLoss).

    A learned radius is the parameter "radii" (give it to the optimizer with
    the model's parameters; the loss uses max(radii, 0), effective_radii());
    fixed radii are the buffer "radii". The buffer
    "class_counts" holds the training-set counts of the sqrt-n policy.

        loss = drolt.RobustCentroidLoss(100, temperature=0.1)
        value = loss(features, labels, bank)          # centroids from a CentroidBank
        value = loss.compute(features, labels, centroids, valid)
    """

    def __init__(self, num_classes, temperature=1.0, base_temperature=None,
                 radius=None, class_counts=None, class_weights=None, normalization="batch",
                 distance="euclidean", reduction="mean", backend="auto", validate_values=True,
                 check_finite=False):
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError("drolt::RobustCentroidLoss: expected num_classes > 0, got %s"
                             % (num_classes,))
        self.num_classes = int(num_classes)
        self.radius = RadiusPolicy.learned(0.5) if radius is None else radius
        self.temperature, self.base_temperature = temperature, base_temperature
        self.normalization, self.distance, self.reduction = normalization, distance, reduction
        self.backend, self.validate_values, self.check_finite = (backend, validate_values,
                                                                 check_finite)
        C = self.num_classes
        init = torch.full((C,), self.radius.eps0)
        if self.radius.is_learned:
            self.radii = nn.Parameter(init)
        else:
            self.register_buffer("radii", init)
        counts = torch.zeros(C, dtype=torch.long)
        self._explicit_counts = class_counts is not None
        if class_counts is not None:
            counts = _check_counts(class_counts, C, "drolt::RobustCentroidLoss: class_counts")
        self.register_buffer("class_counts", counts.clone())
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights)
        self.register_buffer("class_weights", class_weights)
        if self.radius.kind == "sqrt_n" and self.has_counts():
            self._refresh_fixed_radii()

    def has_counts(self):
        return bool(self.class_counts.sum() > 0)

    def set_class_counts(self, counts):
        """Sets the training-set class counts (sqrt-n policy)."""
        counts = _check_counts(counts, self.num_classes,
                               "drolt::RobustCentroidLoss::set_class_counts")
        with torch.no_grad():
            self.class_counts.copy_(counts)
        if self.radius.kind == "sqrt_n":
            self._refresh_fixed_radii()

    def _refresh_fixed_radii(self):
        n = self.class_counts.to(self.radii.dtype)
        eps0 = self.radius.eps0
        with torch.no_grad():
            self.radii.copy_(torch.where(n > 0, eps0 / n.clamp_min(1).sqrt(),
                                             torch.full_like(n, eps0)))

    def effective_radii(self):
        """Effective per-class radii [C] (the C++ radii(); differentiable for the
        learned policy, where it is max(radii, 0))."""
        return self.radii.clamp_min(0) if self.radius.is_learned else self.radii

    def project_(self):
        """Clamps a learned radius's raw parameter to >= 0 in place."""
        if self.radius.is_learned:
            with torch.no_grad():
                self.radii.clamp_min_(0)

    def forward(self, features, labels, bank):
        """Loss with the centroids (and, for sqrt-n without explicit counts, the
        counts) of a CentroidBank."""
        if bank.num_classes != self.num_classes:
            raise ValueError("drolt::RobustCentroidLoss: expected a CentroidBank with %d "
                             "classes, got %d" % (self.num_classes, bank.num_classes))
        if self.radius.kind == "sqrt_n" and not self._explicit_counts and not torch.equal(
                bank.counts.cpu(), self.class_counts.cpu()):
            self.set_class_counts(bank.counts.cpu())
        return self.compute(features, labels, bank.centroids.to(features.dtype), bank.valid)

    def compute(self, features, labels, centroids, valid=None):
        """Loss with explicit centroids [C, D] and an optional valid mask [C]."""
        if self.radius.kind == "sqrt_n" and not self.has_counts():
            raise RuntimeError("drolt::RobustCentroidLoss: the sqrt-n policy needs the "
                               "training-set class counts (class_counts, set_class_counts, or a "
                               "finalized CentroidBank passed to forward)")
        return robust_centroid_loss(features, labels, centroids, self.effective_radii(),
                                    class_weights=self.class_weights, valid=valid,
                                    temperature=self.temperature,
                                    base_temperature=self.base_temperature,
                                    normalization=self.normalization, distance=self.distance,
                                    reduction=self.reduction, backend=self.backend,
                                    validate_values=self.validate_values,
                                    check_finite=self.check_finite)

    def extra_repr(self):
        return "num_classes=%d, temperature=%g, radius=%r, normalization=%s, distance=%s" % (
            self.num_classes, self.temperature, self.radius, self.normalization, self.distance)


class CentroidBank(nn.Module):
    """Per-class centroids kept fixed for an epoch (the C++ drolt::CentroidBank):
    float64 running sums and counts, published as means by finalize().

        bank.clear_sums()
        for x, y in loader: bank.accumulate(model.features(x), y)
        bank.finalize()          # bank.centroids [C, D], bank.valid [C]
    """

    def __init__(self, num_classes, dim, dtype=torch.float32):
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError("drolt::CentroidBank: expected num_classes > 0, got %s"
                             % (num_classes,))
        if int(dim) <= 0:
            raise ValueError("drolt::CentroidBank: expected dim > 0, got %s" % (dim,))
        C, D = int(num_classes), int(dim)
        self.num_classes, self.dim = C, D
        f64 = torch.float64
        self.register_buffer("sums", torch.zeros(C, D, dtype=f64))
        self.register_buffer("pending_counts", torch.zeros(C, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(C, D, dtype=dtype))
        self.register_buffer("counts", torch.zeros(C, dtype=torch.long))
        self.register_buffer("valid", torch.zeros(C, dtype=torch.bool))
        self.register_buffer("ema", torch.zeros(C, D, dtype=f64))

    @torch.no_grad()
    def clear_sums(self):
        """Starts a new accumulation (the published centroids stay in use)."""
        self.sums.zero_()
        self.pending_counts.zero_()

    @torch.no_grad()
    def accumulate(self, features, labels):
        """Adds a batch (detached, moved to the bank's device) to the running sums."""
        ops.bank_accumulate_(self.sums, self.pending_counts, features, labels)

    @torch.no_grad()
    def finalize(self):
        """Publishes the means accumulated since clear_sums(); classes seen at
        least once become valid. Clears the accumulators."""
        ops.bank_finalize_(self.sums, self.pending_counts, self.centroids, self.counts,
                           self.valid, self.ema)

    def extra_repr(self):
        return "num_classes=%d, dim=%d" % (self.num_classes, self.dim)
