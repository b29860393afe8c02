"""retina: from deep-network models of the retina to mechanistic explanations.

Numba (CPU) and CuPy (GPU) kernels for the McIntosh et al. (2016) CNN,
path-integrated gradients and model reduction after Tanaka et al. (2019).
"""

from ._version import __version__
from .io import load_model, save_model
from .model import RetinaCNN

__all__ = ["RetinaCNN", "__version__", "load_model", "save_model"]
