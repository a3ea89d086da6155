"""drolt.compat.DROLoss: a drop-in for the authors' DROLoss (the DRO-LT
repository's losses.py), computed by drolt's operator.

Their forward(batch_feats, batch_targets, centroid_feats, centroid_targets)
recomputes the centroids from centroid_feats on every call and subtracts the
radius of the k-th sample of the batch from the k-th positive entry of the
class-by-sample score matrix, which is the entry of the right class only when
the batch is sorted by label (docs/math.md, "The authors' loss"). This class
pairs each positive entry with its own class's radius; authors_indexing=True
reproduces their batch-order pairing. Everything else is what their code
computes: their radius e is subtracted once (drolt's eps = e / 2), e is used as
given (no clamping), the mean over classes present in the batch divides by all
of them (also those without a centroid), and class weights divide by the sum of
the weights of every class with a centroid. (Their code takes the log of a sum
of exponentials directly; drolt's log-sum-exp does not overflow where theirs
does.)
"""
import torch
from torch import nn

from .functional import robust_centroid_loss


def _class_means(feats, targets, num_classes):
    """[C, D] per-class means of feats by target and the [C] mask of classes present."""
    n = torch.bincount(targets, minlength=num_classes)
    sums = feats.new_zeros(num_classes, feats.shape[1]).index_add(0, targets, feats)
    return sums / n.clamp_min(1).to(feats.dtype).unsqueeze(1), n > 0


def _composed_row_losses(feats, targets, centroids, valid, e, temperature, base_temperature,
                         authors_indexing):
    """The per-class row losses l [C] by plain tensor ops (0 for classes without
    a centroid or not in the batch); e is their radius (subtracted once), per
    class, or None."""
    U = valid.nonzero().view(-1)                          # sorted classes with a centroid
    A = -torch.cdist(centroids[U], feats)                 # [K, B]
    mask = U.unsqueeze(1) == targets.unsqueeze(0)         # [K, B]
    if e is not None:
        rows, cols = mask.nonzero(as_tuple=True)          # row-major: by class, then sample
        if authors_indexing:
            if rows.numel() != targets.numel():
                raise ValueError(
                    "drolt.compat.DROLoss: expected every batch label to have a centroid with "
                    "authors_indexing=True (the authors' code fails too), got %d of %d samples "
                    "with one" % (rows.numel(), targets.numel()))
            sub = e[targets]                              # the k-th sample's radius, batch order
        else:
            sub = e[U[rows]]                              # the entry's own class
        A = A.index_put((rows, cols), A[rows, cols] - sub)
    S = A / temperature
    log_prob = S - torch.logsumexp(S, dim=1, keepdim=True)
    pos = mask.to(S.dtype)
    n = pos.sum(1)
    rows_l = -(temperature / base_temperature) * (log_prob * pos).sum(1) / n.clamp_min(1)
    rows_l = torch.where(n > 0, rows_l, torch.zeros_like(rows_l))
    return rows_l.new_zeros(valid.shape[0]).index_put((U,), rows_l)


class DROLoss(nn.Module):
    """DROLoss(temperature, base_temperature, class_weights, epsilons), as the
    authors' class, plus authors_indexing (default False: every positive entry
    gets its own class's radius). class_weights and epsilons are [C] tensors
    indexed by class (epsilons may be an nn.Parameter being trained)."""

    def __init__(self, temperature=0.07, base_temperature=0.07, class_weights=None,
                 epsilons=None, authors_indexing=False):
        super().__init__()
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.class_weights = class_weights
        self.epsilons = epsilons
        self.authors_indexing = bool(authors_indexing)

    def _num_classes(self, batch_targets, centroid_targets):
        for t in (self.epsilons, self.class_weights):
            if t is not None:
                return int(t.shape[0])
        return int(max(batch_targets.max(), centroid_targets.max())) + 1

    def forward(self, batch_feats, batch_targets, centroid_feats, centroid_targets):
        C = self._num_classes(batch_targets, centroid_targets)
        ct = centroid_targets.to(batch_feats.device, torch.long)
        if ct.numel() == 0 or int(ct.min()) < 0 or int(ct.max()) >= C:
            raise ValueError("drolt.compat.DROLoss: expected centroid_targets in [0, %d), got %s"
                             % (C, "none" if ct.numel() == 0 else
                                "values in [%d, %d]" % (int(ct.min()), int(ct.max()))))
        y = batch_targets.to(batch_feats.device, torch.long)
        centroids, valid = _class_means(centroid_feats.to(batch_feats.dtype), ct, C)
        e = None
        if self.epsilons is not None:
            e = self.epsilons.to(batch_feats.device, batch_feats.dtype)
        if self.authors_indexing or (e is not None and bool((e < 0).any())):
            # Batch-order pairing, or their never-clamped radius gone negative
            # (drolt's operator takes radii >= 0): plain tensor ops.
            rows = _composed_row_losses(batch_feats, y, centroids, valid, e, self.temperature,
                                        self.base_temperature, self.authors_indexing)
        else:
            radii = e / 2 if e is not None else batch_feats.new_zeros(C)
            rows = robust_centroid_loss(batch_feats, y, centroids, radii, valid=valid,
                                        temperature=self.temperature,
                                        base_temperature=self.base_temperature,
                                        reduction="none")
        if self.class_weights is None:
            return rows.sum() / torch.unique(y).numel()
        w = self.class_weights.to(rows.device, rows.dtype)
        return (w * rows).sum() / w[valid].sum()
