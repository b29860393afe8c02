"""retina: deep-network models of the retina, attributed and reduced to mechanisms.

Tanaka, Nayebi, Maheswaranathan, McIntosh, Baccus & Ganguli (NeurIPS 2019) with
compiled kernels (Numba on the CPU, CuPy on the GPU) and a numpy-level API.
"""

import logging as _logging

from . import measures, phenomena, stimuli, units
from ._threads import get_num_threads, set_num_threads
from ._version import __version__
from .attribution import Attribution, attribute
from .insilico import InSilicoParams, InSilicoRetina
from .io import load_model, save_model
from .model import RetinaCNN
from .reduction import ReducedModel, reduce

__all__ = ["RetinaCNN", "load_model", "save_model", "attribute", "Attribution", "reduce", "ReducedModel",
           "InSilicoRetina", "InSilicoParams", "stimuli", "measures", "phenomena", "units", "set_num_threads",
           "get_num_threads", "__version__"]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())   # quiet unless the application configures logging
