"""drolt for PyTorch: the DRO-LT loss (Samuel & Chechik, ICCV 2021) as
torch.ops.drolt operators over drolt's C++ library, with nn.Module wrappers.
See docs/python.md."""
from . import _ops  # noqa: F401  (loads the operators)
from . import compat, data, functional, longtail, metrics  # noqa: F401
from .modules import CentroidBank, RadiusPolicy, RobustCentroidLoss

__all__ = ["RobustCentroidLoss", "CentroidBank", "RadiusPolicy", "functional", "metrics",
           "data", "longtail", "compat"]
__version__ = "0.1.0"
