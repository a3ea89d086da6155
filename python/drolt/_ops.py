"""Loads the compiled operators (torch.ops.drolt.*) and, on torch >= 2.4,
registers their fake kernels (torch < 2.4 uses the C++ Meta kernels)."""
import glob
import os

import torch

_here = os.path.dirname(os.path.abspath(__file__))
_libs = sorted(glob.glob(os.path.join(_here, "_C*.so")))
if not _libs:
    raise ImportError("drolt: the compiled operators (_C*.so) are missing from %s; "
                      "install the package with `pip install --no-build-isolation ./python`"
                      % _here)
torch.ops.load_library(_libs[0])

TORCH_VERSION = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
HAS_FAKE = TORCH_VERSION >= (2, 4)

ops = torch.ops.drolt


def _loss_shape(features, centroids, normalization, reduction):
    if reduction != "none":
        return ()
    return (centroids.shape[0] if normalization == "batch" else features.shape[0],)


if HAS_FAKE:
    @torch.library.register_fake("drolt::robust_centroid_loss")
    def _loss_fake(features, labels, centroids, radii, class_weights=None, valid=None,
                   temperature=1.0, base_temperature=None, normalization="batch",
                   distance="euclidean", reduction="mean", backend="auto",
                   validate_values=True, check_finite=False):
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        return features.new_empty(_loss_shape(features, centroids, normalization, reduction),
                                  dtype=dtype)

    @torch.library.register_fake("drolt::robust_centroid_loss_backward")
    def _loss_backward_fake(grad, features, labels, centroids, radii, class_weights, valid,
                            temperature, base_temperature, normalization, distance, reduction,
                            backend, validate_values, check_finite, output_mask):
        w = (torch.empty_like(class_weights) if class_weights is not None
             else radii.new_empty((0,)))
        return (torch.empty_like(features), torch.empty_like(centroids),
                torch.empty_like(radii), w)
