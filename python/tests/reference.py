"""Pure-PyTorch transcriptions used as test oracles, written from docs/math.md:
drolt's loss ("The loss", "Normalization::classes", "Distances") and the
authors' computation ("The authors' loss")."""
import torch


def distances(features, centroids, distance):
    """[C, B] distances d(z_i, mu_c), by differences (no matrix-product expansion)."""
    diff = centroids.unsqueeze(1) - features.unsqueeze(0)           # [C, B, D]
    if distance == "euclidean":
        return diff.pow(2).sum(-1).sqrt()
    if distance == "squared_euclidean":
        return diff.pow(2).sum(-1)
    zn = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mn = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1 - mn @ zn.t()


def drolt_loss(features, labels, centroids, radii, class_weights=None, valid=None,
               temperature=1.0, base_temperature=None, normalization="batch",
               distance="euclidean", reduction="mean"):
    """docs/math.md's definition, term by term."""
    C, B = centroids.shape[0], features.shape[0]
    tau = temperature
    ratio = tau / (tau if base_temperature is None else base_temperature)
    valid = torch.ones(C, dtype=torch.bool) if valid is None else valid
    w = torch.ones(C, dtype=features.dtype) if class_weights is None else class_weights
    d = distances(features, centroids, distance)
    own = torch.arange(C).unsqueeze(1) == labels.unsqueeze(0)       # [C, B]: y_i == c
    if normalization == "batch":
        rows, weights = [], []
        for c in range(C):
            n_c = int(own[c].sum())
            if n_c == 0 or not bool(valid[c]):
                rows.append(features.new_zeros(()))
                weights.append(features.new_zeros(()))
                continue
            s = (-d[c] - 2 * radii[c] * own[c].to(d.dtype)) / tau
            rows.append(-ratio * (s[own[c]].sum() / n_c - torch.logsumexp(s, 0)))
            weights.append(w[c])
        l, v = torch.stack(rows), torch.stack(weights)
    else:
        rows, weights = [], []
        for i in range(B):
            yi = int(labels[i])
            if not bool(valid[yi]):
                rows.append(features.new_zeros(()))
                weights.append(features.new_zeros(()))
                continue
            sign = torch.where(torch.arange(C) == yi, -1.0, 1.0).to(d.dtype)
            s = (-d[:, i] + sign * radii) / tau
            s = s[valid]
            pos = int(valid[:yi].sum())
            rows.append(-ratio * (s[pos] - torch.logsumexp(s, 0)))
            weights.append(w[yi])
        l, v = torch.stack(rows), torch.stack(weights)
    if reduction == "none":
        return l
    if reduction == "sum":
        return (v * l).sum()
    return (v * l).sum() / v.sum() if bool(v.sum() > 0) else (v * l).sum()


def authors_loss(batch_feats, batch_targets, centroid_feats, centroid_targets, temperature,
                 base_temperature, class_weights=None, epsilons=None):
    """What the authors' DROLoss computes, from docs/math.md's description of it
    (steps 1-6), including the batch-order pairing of radii with entries.
    python/bench.py times it as "the authors' computation"."""
    U = torch.unique(centroid_targets)                             # sorted
    mus = torch.stack([centroid_feats[centroid_targets == u].mean(0) for u in U])   # step 1
    A = -torch.cdist(mus, batch_feats)                             # step 2: [|U|, B]
    if epsilons is not None:                                       # steps 3-4
        positive = U.unsqueeze(1) == batch_targets.unsqueeze(0)
        # A boolean selection walks the matrix row by row; the k-th selected
        # entry gets the radius of the k-th sample's label.
        A = A.masked_scatter(positive, A[positive] - epsilons[batch_targets])
    S = A / temperature
    log_prob = S - S.exp().sum(1, keepdim=True).log()              # step 4: no max shift
    present = torch.unique(batch_targets)                          # step 5
    m = torch.stack([log_prob[:, batch_targets == c].mean(1) for c in present], 1)
    own = (U.unsqueeze(1) == present.unsqueeze(0)).to(S.dtype)     # [|U|, |P|]
    l = -(temperature / base_temperature) * (m * own)
    if class_weights is None:                                      # step 6
        return l.sum() / present.numel()
    w = class_weights[U]
    return (l * w.unsqueeze(1)).sum() / w.sum()
