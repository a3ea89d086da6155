"""torch.ops.drolt.robust_centroid_loss: values and gradients against the
transcription of docs/math.md, gradcheck, bitwise equality with the C++ header
API, errors."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import drolt
from reference import drolt_loss

ops = torch.ops.drolt
NORMS = ["batch", "classes"]
DISTS = ["euclidean", "squared_euclidean", "cosine"]
ENUM = {"batch": 0, "classes": 1, "euclidean": 0, "squared_euclidean": 1, "cosine": 2,
        "none": 0, "mean": 1, "sum": 2, "auto": 0, "reference": 1, "fused": 2}


class Traced(TorchDispatchMode):
    """A pass-through Python dispatch mode: the op then takes its traced path
    (the one torch.compile records), on real tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def inputs(dtype=torch.float64, grad=True, seed=0):
    """An unsorted batch of 12 over 5 classes: class 3 is missing from the
    batch, class 1 is in it but has no centroid (valid[1] = False)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([4, 0, 2, 0, 4, 1, 2, 2, 0, 4, 1, 0])
    x = dict(features=torch.randn(12, 6, generator=g, dtype=dtype),
             centroids=torch.randn(5, 6, generator=g, dtype=dtype),
             radii=torch.rand(5, generator=g, dtype=dtype) * 0.5 + 0.05,
             class_weights=torch.rand(5, generator=g, dtype=dtype) + 0.5)
    for t in x.values():
        t.requires_grad_(grad)
    x["labels"] = labels
    x["valid"] = torch.tensor([True, False, True, True, True])
    return x


def call(x, **kw):
    return drolt.functional.robust_centroid_loss(
        x["features"], x["labels"], x["centroids"], x["radii"], x.get("class_weights"),
        x.get("valid"), **kw)


DIFF = ["features", "centroids", "radii", "class_weights"]


def grads(loss, x):
    g = torch.autograd.grad(loss.sum(), [x[k] for k in DIFF], allow_unused=True)
    return [torch.zeros_like(x[k]) if h is None else h for k, h in zip(DIFF, g)]


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("normalization", NORMS)
def test_matches_the_definition(normalization, distance, backend):
    x = inputs()
    kw = dict(temperature=0.7, base_temperature=0.5, normalization=normalization,
              distance=distance)
    for reduction in ["mean", "sum", "none"]:
        got = call(x, backend=backend, reduction=reduction, **kw)
        want = drolt_loss(x["features"], x["labels"], x["centroids"], x["radii"],
                          x["class_weights"], x["valid"], reduction=reduction, **kw)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for g, h in zip(grads(got, x), grads(want, x)):
            torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("normalization", NORMS)
def test_gradcheck(normalization, distance):
    x = inputs()

    def f(z, mu, eps, w):
        return drolt.functional.robust_centroid_loss(
            z, x["labels"], mu, eps, w, x["valid"], temperature=0.7,
            normalization=normalization, distance=distance)

    assert torch.autograd.gradcheck(f, [x[k] for k in DIFF])
    with Traced():  # the traced path's backward operator
        assert torch.autograd.gradcheck(f, [x[k] for k in DIFF])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("normalization", NORMS)
def test_bitwise_equal_to_the_header_api(normalization, distance, dtype):
    """The eager path computes what the header computes; the traced path's
    forward is the header without a graph, its backward the header's gradients.
    The header is called through a helper operator of the same library (same
    process, same inputs): bitwise comparison is meaningful only there."""
    x = inputs(dtype=dtype)
    for reduction in ["mean", "none"]:
        for backend in ["auto", "reference"]:
            want = ops._header_loss_and_grads(
                x["features"], x["labels"], x["centroids"], x["radii"], x["class_weights"],
                x["valid"], 0.7, 0.5, ENUM[normalization], ENUM[distance], ENUM[reduction],
                ENUM[backend])
            kw = dict(temperature=0.7, base_temperature=0.5, normalization=normalization,
                      distance=distance, reduction=reduction, backend=backend)
            for mode in [None, Traced]:
                if mode is None:
                    loss = call(x, **kw)
                else:
                    with mode():
                        loss = call(x, **kw)
                got = [loss.detach(), *grads(loss, x)]
                # The traced path's forward runs without a graph.
                ref = want[:5] if mode is None else [want[5], *want[1:5]]
                for g, h in zip(got, ref):
                    assert g.dtype == h.dtype and torch.equal(g, h), (reduction, backend, mode)


def test_eager_and_traced_paths():
    x = inputs()
    assert call(x).grad_fn.name().endswith("FusedFunction>")
    with Traced():
        assert call(x).grad_fn.name().endswith("TracedLoss>")
    with torch.no_grad():
        assert call(x).grad_fn is None


def test_second_derivatives_on_the_eager_path():
    x = inputs()
    (gz,) = torch.autograd.grad(call(x), [x["features"]], create_graph=True)
    (h,) = torch.autograd.grad(gz.pow(2).sum(), [x["radii"]])
    want = drolt_loss(x["features"], x["labels"], x["centroids"], x["radii"],
                      x["class_weights"], x["valid"])
    (gw,) = torch.autograd.grad(want, [x["features"]], create_graph=True)
    (hw,) = torch.autograd.grad(gw.pow(2).sum(), [x["radii"]])
    torch.testing.assert_close(h, hw, rtol=1e-8, atol=1e-10)


def test_torchscript():
    @torch.jit.script
    def f(z, y, mu, eps):
        return torch.ops.drolt.robust_centroid_loss(z, y, mu, eps, None, None, 0.5, None,
                                                    "batch", "euclidean", "mean", "auto",
                                                    True, False)

    x = inputs()
    got = f(x["features"], x["labels"], x["centroids"], x["radii"])
    want = drolt.functional.robust_centroid_loss(x["features"], x["labels"], x["centroids"],
                                                 x["radii"], temperature=0.5)
    assert torch.equal(got, want)
    (g,) = torch.autograd.grad(got, [x["radii"]])
    assert bool((g > 0).any())


def bad(x, **changes):
    y = dict(x)
    y.update(changes)
    return y


@pytest.mark.parametrize("change, message", [
    (dict(features=torch.randn(12)), "expected features of shape [B, D], got [12]"),
    (dict(centroids=torch.randn(5, 4, dtype=torch.float64)),
     "expected centroids of shape [C, 6] (D of the features), got [5, 4]"),
    (dict(centroids=torch.randn(5, 6)), "expected centroids of the features' dtype Double, got Float"),
    (dict(labels=torch.zeros(12)), "expected integer labels, got Float"),
    (dict(labels=torch.full((12,), 5)), "expected labels in [0, 5), got values in [5, 5]"),
    (dict(labels=torch.full((12,), -1)), "expected labels in [0, 5), got values in [-1, -1]"),
    (dict(radii=-torch.ones(5, dtype=torch.float64)), "expected radii >= 0, got a radius of -1"),
    (dict(radii=torch.ones(4, dtype=torch.float64)),
     "expected radii of shape [5] (one per class), got [4]"),
    (dict(centroids=torch.randn(5, 6, dtype=torch.float64, device="meta")),
     "expected centroids on the features' device cpu, got meta"),
    (dict(class_weights=torch.zeros(5, dtype=torch.float64)),
     "expected class_weights > 0, got a weight of 0"),
])
def test_bad_input_raises_the_cpp_message(change, message):
    x = inputs(grad=False)
    with pytest.raises(RuntimeError) as e:
        call(bad(x, **change))
    assert "drolt::robust_centroid_loss: " + message in str(e.value)


def test_bad_option_strings():
    x = inputs(grad=False)
    with pytest.raises(RuntimeError, match="expected distance 'euclidean', 'squared_euclidean' "
                                           "or 'cosine', got 'manhattan'"):
        call(x, distance="manhattan")
    with pytest.raises(RuntimeError, match="expected temperature > 0, got -1"):
        call(x, temperature=-1)
