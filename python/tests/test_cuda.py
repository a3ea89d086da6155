"""The operators on CUDA tensors (fused CUDA kernels when the package was built
with nvcc): against the CPU in float64, and the bank. Skip without a GPU."""
import pytest
import torch

import drolt
from test_loss import DIFF, call, grads, inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (CUDA tests run where one is present)")


@pytest.mark.parametrize("normalization", ["batch", "classes"])
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_cuda_matches_cpu(normalization, distance):
    x = inputs()
    xc = {k: (v.detach().cuda().requires_grad_(k in DIFF)) for k, v in x.items()}
    kw = dict(temperature=0.7, normalization=normalization, distance=distance)
    for reduction in ["mean", "none"]:
        want = call(x, reduction=reduction, **kw)
        got = call(xc, reduction=reduction, **kw)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-11)
        for g, h in zip(grads(got, xc), grads(want, x)):
            torch.testing.assert_close(g.cpu(), h, rtol=1e-8, atol=1e-10)


def test_cuda_bank_and_errors():
    bank = drolt.CentroidBank(3, 2).cuda()
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], device="cuda")
    bank.accumulate(z, torch.tensor([0, 0, 2], device="cuda"))
    bank.finalize()
    torch.testing.assert_close(bank.centroids.cpu(), torch.tensor([[2.0, 3.0], [0, 0], [5, 6]]))
    assert bank.valid.tolist() == [True, False, True]
    x = inputs(grad=False)
    with pytest.raises(RuntimeError, match="expected centroids on the features' device"):
        drolt.functional.robust_centroid_loss(x["features"].cuda(), x["labels"].cuda(),
                                              x["centroids"], x["radii"].cuda())
