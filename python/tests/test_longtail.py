"""drolt.longtail against their definitions (docs/math.md, "Long-tail baselines")
written with plain torch.nn.functional."""
import pytest
import torch
import torch.nn.functional as F

import drolt.longtail as lt


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    return logits, torch.tensor([0, 3, 1, 1, 2, 0, 3, 3, 0])


def same(got, want, logits):
    torch.testing.assert_close(got, want)
    (g,) = torch.autograd.grad(got, [logits], retain_graph=True)
    (h,) = torch.autograd.grad(want, [logits])
    torch.testing.assert_close(g, h)


def test_focal():
    logits, y = batch()
    logp = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    same(lt.focal_loss(logits, y, gamma=2.0), (-(1 - logp.exp()) ** 2 * logp).mean(), logits)
    same(lt.focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y), logits)


def test_ldam_and_logit_adjusted():
    logits, y = batch(1)
    counts = [100, 30, 10, 2]
    m = lt.ldam_margins(counts, 0.5)
    want_m = torch.tensor(counts, dtype=torch.float64) ** -0.25
    torch.testing.assert_close(m.double(), 0.5 * want_m / want_m.max(), rtol=1e-6, atol=1e-7)
    shifted = logits - 30 * F.one_hot(y, 4) * m.double()[y][:, None]
    w = lt.drw_class_weights(counts, epoch=160, start_epoch=160)
    assert lt.drw_class_weights(counts, epoch=10, start_epoch=160) is None
    same(lt.ldam_loss(logits, y, m, weight=w), F.cross_entropy(shifted, y, weight=w.double()),
         logits)
    lp = lt.log_class_prior(counts)
    torch.testing.assert_close(lp, (torch.tensor(counts) / 142.0).log().double())
    same(lt.logit_adjusted_loss(logits, y, lp, tau=1.0), F.cross_entropy(logits + lp, y), logits)
    torch.testing.assert_close(lt.logit_adjust(logits, counts, 0.5), logits - 0.5 * lp)


def test_posthoc_and_max_norm():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    torch.testing.assert_close(lt.tau_normalize(w, 1.0), w / w.norm(dim=1, keepdim=True))
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    mu = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = lt.nearest_class_mean(z, mu, torch.tensor([True, True, False]))
    torch.testing.assert_close(s[:, :2], torch.eye(2))
    assert bool((s[:, 2] == float("-inf")).all())
    lt.max_norm_(w, 1.0)
    torch.testing.assert_close(w, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_errors_carry_the_cpp_message():
    logits, y = batch()
    with pytest.raises(RuntimeError, match=r"drolt::focal_loss: expected gamma >= 0"):
        lt.focal_loss(logits, y, gamma=-1.0)
    with pytest.raises(RuntimeError, match=r"drolt::ldam_loss: expected floating-point margins"):
        lt.ldam_loss(logits, y, torch.ones(3))
