"""drolt.metrics and drolt.data against direct computations; samplers pickle."""
import math
import pickle

import pytest
import torch

import drolt


def test_split_accuracy():
    # Classes 0 (Many, 150 train), 1 (Medium, 50), 2 (Few, 5), 3 (Few, no test samples).
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 0, 1, 0, 2, 0, 0])
    a = drolt.metrics.split_accuracy(preds, targets, [150, 50, 5, 3])
    assert a.many == pytest.approx(3 / 4) and a.medium == pytest.approx(1 / 2)
    assert a.few == pytest.approx(1 / 3) and a.overall == pytest.approx(5 / 9)
    assert a.class_mean == pytest.approx((3 / 4 + 1 / 2 + 1 / 3) / 3)
    scores = torch.nn.functional.one_hot(preds, 4).float()
    assert drolt.metrics.split_accuracy(scores, targets, [150, 50, 5, 3]) == a
    with pytest.raises(RuntimeError, match="drolt::metrics::split_accuracy"):
        drolt.metrics.split_accuracy(preds, targets, [])


def test_ece_and_nearest_centroid():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    y = torch.tensor([0, 1, 1])
    # bins of width 1/15: each sample alone in its bin
    want = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7)) / 3
    assert drolt.metrics.expected_calibration_error(p, y) == pytest.approx(want)
    mu = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = torch.tensor([[9.0, 1.0], [1.0, 8.0], [0.5, 0.5]])
    assert drolt.metrics.nearest_centroid_predict(z, mu).tolist() == [1, 2, 0]
    valid = torch.tensor([True, True, False])
    assert drolt.metrics.nearest_centroid_predict(z, mu, valid).tolist() == [1, 0, 0]
    assert drolt.metrics.nearest_centroid_accuracy(z, torch.tensor([1, 2, 2]), mu) == \
        pytest.approx(2 / 3)


def test_longtail():
    counts = drolt.data.longtail_counts(500, 10, 100)
    assert counts == [math.floor(500 * 100 ** (-c / 9) + 1e-9) for c in range(10)]
    targets = torch.arange(10).repeat_interleave(500)
    idx = drolt.data.make_longtail(targets, 10, 500, 100, seed=3)
    assert torch.bincount(targets[idx], minlength=10).tolist() == counts
    assert torch.equal(idx, drolt.data.make_longtail(targets, 10, 500, 100, seed=3))
    with pytest.raises(RuntimeError, match="drolt::data::longtail_counts: expected n_max > 0"):
        drolt.data.longtail_counts(0, 10, 100)


def test_samplers_are_samplers_and_pickle():
    targets = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    s = drolt.data.ClassBalancedSampler(targets, seed=5)
    assert isinstance(s, torch.utils.data.Sampler) and len(s) == 100
    first = list(s)
    clone = pickle.loads(pickle.dumps(s))       # after epoch 0: the copy goes on with epoch 1
    assert list(clone) == list(s) != first
    draws = torch.tensor([list(drolt.data.ClassBalancedSampler(targets, seed=e))
                          for e in range(20)]).view(-1)
    share = torch.bincount(targets[draws], minlength=3).double() / draws.numel()
    assert bool((share - 1 / 3).abs().max() < 0.05)
    aware = list(drolt.data.ClassAwareSampler(targets, k=4, seed=1))
    assert len(aware) == 90 * 3
    runs = targets[torch.tensor(aware[:268])].view(-1, 4)
    assert bool((runs == runs[:, :1]).all())    # 4 of one class in turn
    loader = torch.utils.data.DataLoader(list(range(100)), batch_size=10,
                                         sampler=drolt.data.SqrtSampler(targets, seed=2))
    assert sum(b.numel() for b in loader) == 100
