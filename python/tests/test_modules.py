"""drolt.RobustCentroidLoss and drolt.CentroidBank: parameters, state dicts,
the bank's operators, a tiny training run (the docs/python.md example)."""
import io

import pytest
import torch

import drolt


def roundtrip(module, fresh):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    return fresh


def test_learned_radii_are_parameters_and_round_trip():
    loss = drolt.RobustCentroidLoss(4, temperature=0.5)
    assert [n for n, _ in loss.named_parameters()] == ["radii"]
    assert torch.equal(loss.radii.detach(), torch.full((4,), 0.5))
    with torch.no_grad():
        loss.radii.copy_(torch.tensor([0.1, -0.2, 0.3, 0.4]))
    assert torch.equal(loss.effective_radii(), torch.tensor([0.1, 0.0, 0.3, 0.4]))
    back = roundtrip(loss, drolt.RobustCentroidLoss(4, temperature=0.5))
    assert set(back.state_dict()) == {"radii", "class_counts"}
    assert torch.equal(back.radii, loss.radii)
    z, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    mu = torch.randn(4, 3)
    assert torch.equal(back.compute(z, y, mu), loss.compute(z, y, mu))


def test_fixed_policies():
    shared = drolt.RobustCentroidLoss(3, radius=drolt.RadiusPolicy.shared(0.25))
    assert list(shared.parameters()) == [] and torch.equal(shared.radii, torch.full((3,), 0.25))
    sq = drolt.RobustCentroidLoss(3, radius=drolt.RadiusPolicy.parse("sqrtn", 1.0),
                                  class_counts=[4, 16, 0])
    torch.testing.assert_close(sq.radii, torch.tensor([0.5, 0.25, 1.0]))
    with pytest.raises(RuntimeError, match="the sqrt-n policy needs the training-set"):
        drolt.RobustCentroidLoss(3, radius=drolt.RadiusPolicy.sqrt_n(1.0)).compute(
            torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(3, 3))
    with pytest.raises(ValueError, match="expected a finite radius eps0 >= 0, got -1"):
        drolt.RadiusPolicy.learned(-1)


def test_bank_matches_per_class_means_and_round_trips():
    g = torch.Generator().manual_seed(0)
    bank = drolt.CentroidBank(5, 3)
    z, y = torch.randn(20, 3, generator=g), torch.randint(0, 4, (20,), generator=g)
    bank.accumulate(z[:7], y[:7])
    bank.accumulate(z[7:], y[7:])
    assert int(bank.pending_counts.sum()) == 20
    bank.finalize()
    for c in range(5):
        sel = y == c
        assert bool(bank.valid[c]) == bool(sel.any())
        if sel.any():
            torch.testing.assert_close(bank.centroids[c], z[sel].double().mean(0).float())
    assert int(bank.pending_counts.sum()) == 0 and bool((bank.sums == 0).all())
    back = roundtrip(bank, drolt.CentroidBank(5, 3))
    for name, t in bank.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    with pytest.raises(RuntimeError, match=r"drolt::CentroidBank::accumulate: expected labels "
                                           r"in \[0, 5\), got values in \[0, 7\]"):
        bank.accumulate(z[:2], torch.tensor([0, 7]))
    with pytest.raises(RuntimeError, match=r"drolt::CentroidBank::accumulate: expected features "
                                           r"of shape \[N, 3\], got \[2, 4\]"):
        bank.accumulate(torch.randn(2, 4), torch.tensor([0, 1]))


def test_tiny_training_run():
    """The docs/python.md example, shortened: the loss falls."""
    torch.manual_seed(0)
    C, D = 4, 8
    x = torch.randn(64, 10)
    y = torch.arange(64) % C
    x = x + 2 * torch.nn.functional.one_hot(y, 10).float()
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, D))
    loss_fn = drolt.RobustCentroidLoss(C, temperature=0.5)
    bank = drolt.CentroidBank(C, D)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=0.1)
    history = []
    for _ in range(15):
        with torch.no_grad():
            bank.clear_sums()
            bank.accumulate(model(x), y)
            bank.finalize()
        loss = loss_fn(model(x), y, bank)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss))
    assert history[-1] < 0.8 * history[0]
