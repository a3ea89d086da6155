"""torch.library.opcheck and a torch.compile(fullgraph=True) training step
(PyTorch >= 2.4: they skip, with the reason, on older versions)."""
import os

import pytest
import torch

import drolt
from drolt._ops import HAS_FAKE, TORCH_VERSION

if os.environ.get("DROLT_REQUIRE_COMPILE_TESTS") == "1" and not HAS_FAKE:
    raise RuntimeError("DROLT_REQUIRE_COMPILE_TESTS=1 but this torch (%d.%d) is older than 2.4"
                       % TORCH_VERSION)

pytestmark = pytest.mark.skipif(
    not HAS_FAKE, reason="torch.library.opcheck, register_fake and torch.compile of custom "
                         "operators need PyTorch >= 2.4 (this is %d.%d)" % TORCH_VERSION)


def sample(grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=grad)
    mu = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=grad)
    eps = (torch.rand(5, generator=g, dtype=torch.float64) * 0.3).requires_grad_(grad)
    w = (torch.rand(5, generator=g, dtype=torch.float64) + 0.5).requires_grad_(grad)
    y = torch.tensor([4, 0, 2, 0, 4, 1, 2, 2, 0, 4])
    valid = torch.tensor([True, False, True, True, True])
    return z, y, mu, eps, w, valid


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(normalization="classes", distance="cosine", reduction="none", backend="reference"),
    dict(distance="squared_euclidean", reduction="sum", base_temperature=0.3),
])
def test_opcheck_loss(kwargs):
    z, y, mu, eps, w, valid = sample()
    torch.library.opcheck(torch.ops.drolt.robust_centroid_loss,
                          (z, y, mu, eps, w, valid), dict(temperature=0.5, **kwargs))


def test_opcheck_loss_backward():
    z, y, mu, eps, w, valid = sample(grad=False)
    args = (torch.tensor(1.0, dtype=torch.float64), z, y, mu, eps, w, valid, 0.5, None, "batch",
            "euclidean", "mean", "auto", True, False, [True, True, True, False])
    torch.library.opcheck(torch.ops.drolt.robust_centroid_loss_backward, args)


def test_compile_fullgraph_training_step():
    """One step of a tiny model plus the loss, compiled as one graph, equals eager."""
    torch.manual_seed(0)
    C, D = 5, 4
    model = torch.nn.Linear(6, D)
    loss_fn = drolt.RobustCentroidLoss(C, temperature=0.5)
    x, y = torch.randn(10, 6), torch.tensor([4, 0, 2, 0, 4, 1, 2, 2, 0, 4])
    mu, valid = torch.randn(C, D), torch.tensor([True, False, True, True, True])

    def step(x, y, mu, valid):
        return loss_fn.compute(model(x), y, mu, valid)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x, y, mu, valid)
    got.backward()
    g_got = [p.grad.clone() for p in [*model.parameters(), loss_fn.radii]]
    for p in [*model.parameters(), loss_fn.radii]:
        p.grad = None
    want = step(x, y, mu, valid)
    want.backward()
    torch.testing.assert_close(got, want)
    for g, p in zip(g_got, [*model.parameters(), loss_fn.radii]):
        torch.testing.assert_close(g, p.grad)
