"""The phenomena of the paper as experiments: stimulus, response, measure, mechanism.

One module per phenomenon (:mod:`~retina.phenomena.osr`,
:mod:`~retina.phenomena.latency`, :mod:`~retina.phenomena.reversal`,
:mod:`~retina.phenomena.anticipation`), each defining one
:class:`Phenomenon` (its protocol as a function, its list parameters, window
of interest, key measure, relevant simulator lesions and its pass criteria)
and registering it in :data:`REGISTRY`.  ``explain``, ``sweep``, the command
line, the calibration script, the recipe and the tests all read the registry:
adding a phenomenon is adding a module (``docs/architecture.md``).

Each protocol function builds its stimuli (:mod:`retina.stimuli`, contrast
units), runs any model with a ``rates(movie)`` method returning
``(T, n_cells)`` aligned with the movie (the in-silico retina, or a
:class:`retina.RetinaCNN`), measures the phenomenon with
:mod:`retina.measures` and returns a :class:`PhenomenonResult` whose
``measures`` is a dict of plain numbers.  Every protocol default is a
parameter, so each experiment can be swept.

For a CNN with ``explain=True`` each condition's window of interest is
attributed to layer-1 channels with ``context_ms`` (default 500 ms) of
response either side, not the whole movie: the attribution, the reduced
model's fidelity and the figures cover that stretch (``ReducedModel.start``
is its first frame), the pruned network is measured on the whole movie.
Pass ``context_ms=None`` to attribute whole movies.
"""

from .base import REGISTRY, Check, Phenomenon, PhenomenonResult, get, kinetics_checks, names, register, unregister
from .probe import CONTEXT_MS, CNNProbe, probe

# the built-in phenomena register themselves on import, in this order
from .osr import OSR, OSR_FREQUENCIES_HZ, osr  # isort: skip
from .latency import LATENCY, LATENCY_INTENSITIES, latency  # isort: skip
from .reversal import REVERSAL, reversal  # isort: skip
from .anticipation import ANTICIPATION, anticipation  # isort: skip

__all__ = ["Phenomenon", "PhenomenonResult", "Check", "kinetics_checks", "REGISTRY", "register", "unregister", "get",
           "names", "CNNProbe", "probe", "CONTEXT_MS", "osr", "latency", "reversal", "anticipation", "OSR", "LATENCY",
           "REVERSAL", "ANTICIPATION", "OSR_FREQUENCIES_HZ", "LATENCY_INTENSITIES"]
