"""drolt.compat.DROLoss against the transcription of the authors' computation
(tests/reference.py, written from docs/math.md)."""
import pytest
import torch

from drolt.compat import DROLoss
from reference import authors_loss

C, D = 6, 5


def data(seed, labels, eps_sign=1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(labels)
    feats = torch.randn(len(labels), D, generator=g, dtype=torch.float64, requires_grad=True)
    # Class 3 has no centroid features.
    ct = torch.tensor([0, 1, 2, 4, 5] * 3)
    cf = torch.randn(len(ct), D, generator=g, dtype=torch.float64)
    eps = (eps_sign * (torch.rand(C, generator=g, dtype=torch.float64) + 0.2)).requires_grad_()
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    return feats, labels, cf, ct, eps, w


UNSORTED = [4, 0, 2, 0, 5, 1, 2, 2, 0, 4, 1, 0]
# Class 1 has a centroid but is absent: the weighted mean divides by its weight too.
ABSENT = [4, 0, 2, 0, 5, 2, 2, 0, 4, 0]
BATCHES = pytest.mark.parametrize("batch", [UNSORTED, ABSENT], ids=["unsorted", "absent"])


def sorted_batch(feats, labels):
    order = torch.sort(labels, stable=True).indices
    return feats[order], labels[order]


def check(got, want, inputs):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, h in zip(torch.autograd.grad(got, inputs, retain_graph=True),
                    torch.autograd.grad(want, inputs)):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-11)


@BATCHES
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_eps", [False, True])
def test_equals_the_authors_loss_on_sorted_batches(weighted, with_eps, batch):
    feats, labels, cf, ct, eps, w = data(0, batch)
    z, y = sorted_batch(feats, labels)
    kw = dict(class_weights=w if weighted else None, epsilons=eps if with_eps else None)
    got = DROLoss(0.5, 0.7, **kw)(z, y, cf, ct)
    want = authors_loss(z, y, cf, ct, 0.5, 0.7, **kw)
    check(got, want, [feats] + ([eps] if with_eps else []))


@BATCHES
@pytest.mark.parametrize("weighted", [False, True])
def test_authors_indexing_equals_the_authors_loss_on_unsorted_batches(weighted, batch):
    feats, labels, cf, ct, eps, w = data(1, batch)
    kw = dict(class_weights=w if weighted else None, epsilons=eps)
    got = DROLoss(0.5, 0.7, authors_indexing=True, **kw)(feats, labels, cf, ct)
    want = authors_loss(feats, labels, cf, ct, 0.5, 0.7, **kw)
    check(got, want, [feats, eps])


@BATCHES
@pytest.mark.parametrize("weighted", [False, True])
def test_default_pairs_radii_by_class_on_unsorted_batches(weighted, batch):
    """The correct formula is the authors' computation on the same batch sorted
    by label (the loss does not depend on the order once the pairing is right)."""
    feats, labels, cf, ct, eps, w = data(2, batch)
    kw = dict(class_weights=w if weighted else None, epsilons=eps)
    got = DROLoss(0.5, 0.7, **kw)(feats, labels, cf, ct)
    z, y = sorted_batch(feats, labels)
    check(got, authors_loss(z, y, cf, ct, 0.5, 0.7, **kw), [feats, eps])
    # ... and their batch-order pairing really differs on this batch.
    theirs = authors_loss(feats, labels, cf, ct, 0.5, 0.7, **kw)
    assert abs(float(got) - float(theirs)) > 1e-3


def test_negative_radii_as_their_code_takes_them():
    feats, labels, cf, ct, eps, w = data(3, UNSORTED, eps_sign=-1.0)
    got = DROLoss(0.5, 0.7, class_weights=w, epsilons=eps)(feats, labels, cf, ct)
    z, y = sorted_batch(feats, labels)
    check(got, authors_loss(z, y, cf, ct, 0.5, 0.7, class_weights=w, epsilons=eps), [feats, eps])


def test_batch_class_without_centroid():
    """Without radii their code takes a batch class with no centroid: its samples
    are negatives only, and the class still counts in the mean over classes."""
    feats, labels, cf, ct, eps, w = data(4, [3, 0, 3, 2, 4, 0, 1, 5])
    got = DROLoss(0.5, 0.7)(feats, labels, cf, ct)
    check(got, authors_loss(feats, labels, cf, ct, 0.5, 0.7), [feats])
    with pytest.raises(ValueError, match="expected every batch label to have a centroid"):
        DROLoss(0.5, 0.7, epsilons=eps, authors_indexing=True)(feats, labels, cf, ct)


def test_bad_centroid_targets():
    feats, labels, cf, ct, eps, w = data(5, UNSORTED)
    with pytest.raises(ValueError, match=r"expected centroid_targets in \[0, 6\), got values "
                                         r"in \[0, 9\]"):
        DROLoss(0.5, 0.7, epsilons=eps)(feats, labels, cf, torch.where(ct == 5, 9, ct))
