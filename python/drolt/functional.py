"""drolt.functional: the loss as a function (torch.ops.drolt.robust_centroid_loss)."""
from ._ops import ops

NORMALIZATIONS = ("batch", "classes")
DISTANCES = ("euclidean", "squared_euclidean", "cosine")
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "fused", "reference")


def robust_centroid_loss(features, labels, centroids, radii, class_weights=None, valid=None,
                         temperature=1.0, base_temperature=None, normalization="batch",
                         distance="euclidean", reduction="mean", backend="auto",
                         validate_values=True, check_finite=False):
    """The DRO-LT loss (docs/math.md). features [B, D], labels [B] (integer),
    centroids [C, D], radii [C] (the paper's epsilon, >= 0), class_weights [C]
    (> 0) or None, valid [C] bool (classes that have a centroid) or None.

    normalization: "batch" (the paper's) or "classes"; distance: "euclidean",
    "squared_euclidean" or "cosine"; reduction: "mean", "sum" or "none" ([C]
    for batch normalization, [B] for classes); backend: "auto" (the fused
    path for CPU float32/float64 and CUDA, the reference otherwise), "fused" or
    "reference" (plain tensor ops). Bad input raises RuntimeError with the C++
    library's message ("drolt::robust_centroid_loss: expected ..., got ...").
    """
    return ops.robust_centroid_loss(features, labels, centroids, radii, class_weights, valid,
                                    float(temperature),
                                    None if base_temperature is None else float(base_temperature),
                                    normalization, distance, reduction, backend,
                                    bool(validate_values), bool(check_finite))


__all__ = ["robust_centroid_loss"]
