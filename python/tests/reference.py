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
    (steps 1-6), including the batch-order pairing of radii with entries."""
    U = sorted(set(centroid_targets.tolist()))
    mus = torch.stack([centroid_feats[centroid_targets == u].mean(0) for u in U])
    A = -torch.stack([torch.stack([(mus[r] - z).pow(2).sum().sqrt() for z in batch_feats])
                      for r in range(len(U))])                       # [|U|, B]
    if epsilons is not None:
        # Positive entries in row-major order; the k-th gets the k-th sample's radius.
        entries = [(r, i) for r, u in enumerate(U) for i in range(len(batch_targets))
                   if int(batch_targets[i]) == u]
        sub = torch.zeros_like(A)
        for k, (r, i) in enumerate(entries):
            sub = sub.index_put((torch.tensor([r]), torch.tensor([i])),
                                epsilons[batch_targets[k]].reshape(1))
        A = A - sub
    S = A / temperature
    log_prob = S - S.exp().sum(1, keepdim=True).log()
    present = sorted(set(batch_targets.tolist()))
    total = batch_feats.new_zeros(())
    for r, u in enumerate(U):
        if u in present:
            m = log_prob[r][batch_targets == u].mean()
            l_u = -(temperature / base_temperature) * m
            total = total + (l_u if class_weights is None else class_weights[u] * l_u)
    if class_weights is None:
        return total / len(present)
    return total / class_weights[torch.tensor(U)].sum()
