"""The in-silico retina: a simulated retina whose circuit is known (``docs/insilico.md``).

A movie of Weber contrast ``(T, H, W)`` (10 ms frames, 55 um pixels, 0 = grey)
goes through

1. a centre-surround (difference-of-Gaussians) stage shared by all pathways
   (separable Gaussians cut at ``truncate`` s.d., radius ``int(truncate sigma + 0.5)``,
   each 1-D kernel normalised; off-screen is grey);
2. three bipolar pathways (OFF-fast, ON-fast, ON-slow), each a difference of
   gamma filters (exact first-order cascades), a threshold-linear rectifier and
   a depressing synapse (a vesicle pool ``R``);
3. an OFF-driven amacrine (``A1``): narrow Gaussian pooling of the OFF release,
   a low-pass and its own depressing synapse, inhibiting the ganglion cell
   subtractively;
4. two ganglion-cell types (``OFF`` and ``OSR``) on a mosaic: Gaussian pooling
   of the bipolar release, a membrane low-pass, a softplus output in Hz, and
   Poisson spikes.

Everything is deterministic except the spikes.  Each pathway's contribution to
the membrane potential is returned separately (``pathways``), so the exact
ground-truth attribution of ``docs/insilico.md`` section 4 is available
(:meth:`InSilicoRetina.attribution`).  Lesions are parameters
(:meth:`InSilicoParams.lesioned`).  State carries across blocks, so arbitrarily
long movies stream through (:meth:`InSilicoRetina.initial_state`).

The hot loops are the kernels ``bipolar_block`` and ``ganglion_block``
(:mod:`retina.insilico._cpu`, Numba; :mod:`retina.insilico._gpu`, CuPy),
dispatched through :func:`retina._backend.resolve` like every kernel.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.ndimage as ndi

from .._validate import as_float_array, check_int
from ..units import DT, check_physical_movie

__all__ = ["BipolarParams", "GanglionParams", "InSilicoParams", "InSilicoRetina", "Cell", "PATHWAYS",
           "PATHWAY_SPEEDS", "LESIONS", "ROW", "SIMULATOR_KEY", "simulator_of", "simulator_metadata",
           "COUNTERFACTUALS", "counterfactual", "CALIBRATIONS", "calibration", "simulator_name", "named_params"]


PATHWAYS = ("OFF", "ONf", "ONs")
"""Bipolar pathway names, in the order of every pathway axis."""

ROW = tuple((25.0, float(x)) for x in range(15, 36))
"""A dense row of cell positions (y = 25, x = 15..35): the population readout of the bar
protocols of ``docs/insilico.md`` section 2 (``InSilicoRetina(positions=ROW)``)."""

LESIONS = ("OFF", "ONf", "ONs", "A1", "depression", "linear")
"""Lesions :meth:`InSilicoParams.lesioned` knows: a pathway, the amacrine, all
synaptic depression, or ``linear`` (amacrine and depression both removed)."""


@dataclass
class BipolarParams:
    """One bipolar pathway: ``K(t) = Gamma(t; n, tau1) - a2 Gamma(t; n, 2 tau1)``, sign, threshold, depression."""

    sign: float
    n: int = 3
    tau1_ms: float = 30.0
    a2: float = 0.5
    theta: float = 0.0
    U: float = 10.0
    """Release rate constant of the vesicle pool, 1/s (0: no depression)."""
    tau_rec_s: float = 1.0

    def time_to_peak_ms(self, resolution_ms=0.1):
        """Time to the peak of ``|K(t)|`` in continuous time (ms, to ``resolution_ms``), with
        ``Gamma(t; n, tau) = t^n exp(-t / tau) / (n! tau^(n + 1))``: the "time to peak" of
        ``docs/insilico.md`` section 1.1, by which a pathway is fast or slow (``docs/insilico.md`` section 4)."""
        from math import lgamma

        n, tau = float(self.n), float(self.tau1_ms)
        t = np.arange(1, int(round(40 * n * tau / resolution_ms)) + 1) * resolution_ms

        def gamma(tau):
            return np.exp(n * np.log(t) - t / tau - lgamma(n + 1) - (n + 1) * np.log(tau))

        return round(float(t[np.argmax(np.abs(gamma(tau) - self.a2 * gamma(2 * tau)))]), 6)


PATHWAY_SPEEDS = {"OFF": "fast", "ONf": "fast", "ONs": "slow"}
"""Each bipolar pathway's speed, part of the circuit's identity (``docs/insilico.md`` section 1.1): the OFF and
ON-fast filters peak within the fast bound and the ON-slow filter after the slow bound (time to peak,
:data:`retina.reduction.FAST_MS` and :data:`retina.reduction.SLOW_MS`); a calibration keeps them so
(:func:`retina.phenomena.kinetics_checks`)."""


@dataclass
class GanglionParams:
    """One ganglion-cell type: pathway weights, amacrine weight, threshold and peak rate."""

    w_OFF: float
    w_ONf: float
    w_ONs: float
    w_A1: float
    theta: float
    r_max: float

    def weights(self):
        return np.array([self.w_OFF, self.w_ONf, self.w_ONs])


def _default_bipolars():
    return {"OFF": BipolarParams(-1.0, 3, 30.0, 0.40, 0.03, 12.0, 0.55),
            "ONf": BipolarParams(+1.0, 3, 30.0, 0.60, 0.06, 15.0, 1.0),
            "ONs": BipolarParams(+1.0, 3, 55.0, 0.75, 0.00, 5.6, 1.1)}


def _default_ganglia():
    return {"OFF": GanglionParams(1.0, 0.8, 0.0, 1.2, 0.05, 400.0),
            "OSR": GanglionParams(0.45, 0.2, 1.45, 1.0, -0.05, 150.0)}


@dataclass
class InSilicoParams:
    """Every parameter of the simulated retina (units in the names; ``docs/insilico.md`` section 1).

    ``InSilicoParams()`` gives the documented starting values (``docs/insilico.md``); ``InSilicoParams.default()``
    the calibrated set shipped with the package (``retina/data/insilico.json``,
    written by ``scripts/calibrate_insilico.py``).  JSON round trip:
    :meth:`to_json` / :meth:`from_json`.
    """

    sigma_center_px: float = 0.8
    sigma_surround_px: float = 3.0
    w_surround: float = 0.3
    gain: float = 7.5
    bipolar: dict = field(default_factory=_default_bipolars)
    sigma_amacrine_px: float = 1.0
    tau_amacrine_ms: float = 110.0
    U_amacrine: float = 10.0
    theta_amacrine: float = 0.0
    """The amacrine's threshold: it releases ``max(a - theta_amacrine, 0)`` of its low-passed drive ``a``
    (0: every positive drive).  A threshold recruits inhibition only for strong OFF input."""
    tau_rec_amacrine_s: float = 0.65
    U_OFF_A1: float | None = None
    """Release rate constant (1/s) of the OFF bipolar's synapse onto the amacrine, with its own vesicle pool (the
    OFF pathway's filter, threshold and recovery time); ``None``: the amacrine reads the same pool as the ganglion
    cells (one depression per OFF bipolar)."""
    sigma_ganglion_px: float = 2.0
    tau_membrane_ms: float = 20.0
    beta: float = 20.0
    ganglion: dict = field(default_factory=_default_ganglia)
    mosaic: list = field(default_factory=lambda: [17, 25, 33])
    """Cell centres (px) along each axis; every type sits on the grid mosaic x mosaic."""
    gain_control: float = 0.0
    """Berry-type output gain control ``r / (1 + A^4)``, ``A = LP(B r)``: this ``B``; 0 = off."""
    tau_gain_control_s: float = 0.1
    truncate: float = 4.0
    """Gaussian pooling kernels are cut at this many s.d. and renormalised to sum 1."""

    # -------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, d):
        """Build from a plain dict (as read from JSON); unknown keys are an error."""
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown in-silico parameters {sorted(unknown)}; known: {sorted(known)}")
        if "bipolar" in d:
            bip = _default_bipolars()
            if not isinstance(d["bipolar"], dict):
                raise ValueError("bipolar must map pathway names to their parameters")
            for name, v in d["bipolar"].items():
                if name not in PATHWAYS:
                    raise ValueError(f"bipolar pathway must be one of {PATHWAYS}, got {name!r}")
                bip[name] = BipolarParams(**v) if isinstance(v, dict) else v
            d["bipolar"] = bip
        if "ganglion" in d:
            if not isinstance(d["ganglion"], dict):
                raise ValueError("ganglion must map cell types to their parameters")
            d["ganglion"] = {k: GanglionParams(**v) if isinstance(v, dict) else v for k, v in d["ganglion"].items()}
        try:
            p = cls(**d)
        except TypeError as exc:
            raise ValueError(f"in-silico parameters: {exc}") from None
        p.validate()
        return p

    @classmethod
    def from_json(cls, path):
        """Read a parameter file written by :meth:`to_json` (errors name the file and the problem)."""
        def refuse(name):
            raise ValueError(f"{name} is not a number in a parameter file")

        try:
            with open(path) as fh:
                data = json.load(fh, parse_constant=refuse)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the parameter file {str(path)!r}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"the parameter file {str(path)!r} is not valid JSON: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"the parameter file {str(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"the parameter file {str(path)!r} must hold a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the parameter file {str(path)!r}: {exc}") from None

    @classmethod
    def default(cls):
        """The calibrated parameters shipped with the package (the documented starting values if none are bundled)."""
        if (resources.files("retina") / "data" / "insilico.json").is_file():
            return _packaged("insilico.json")
        return cls()

    def to_dict(self):
        return asdict(self)

    def to_json(self, path=None, *, note=None):
        """The parameters as JSON text; written atomically to ``path`` when given."""
        d = self.to_dict()
        text = json.dumps(d, indent=2, sort_keys=False) + "\n"
        if path is not None:
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return text

    def copy(self):
        return copy.deepcopy(self)

    def validate(self):
        """Raise ``ValueError`` naming the first parameter out of range (every number must also be finite)."""
        def numbers(obj, prefix):
            if isinstance(obj, bool):
                raise ValueError(f"{prefix} must be a number, got {obj!r}")
            if isinstance(obj, (int, float)):
                yield prefix, obj
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    yield from numbers(v, f"{prefix}[{k!r}]")
            elif isinstance(obj, (list, tuple)):
                for i, v in enumerate(obj):
                    yield from numbers(v, f"{prefix}[{i}]")
            elif hasattr(obj, "__dataclass_fields__"):
                for f in fields(obj):
                    yield from numbers(getattr(obj, f.name), f"{prefix}.{f.name}")
            else:
                raise ValueError(f"{prefix} must be a number, got {type(obj).__name__}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "U_OFF_A1" and value is None:
                continue
            if f.name not in ("bipolar", "ganglion", "mosaic") and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            for name, v in numbers(value, f.name):
                if not np.isfinite(v):
                    raise ValueError(f"{name} must be finite, got {v!r}")
        pos = ["sigma_center_px", "sigma_surround_px", "gain", "sigma_amacrine_px", "tau_amacrine_ms",
               "tau_rec_amacrine_s", "sigma_ganglion_px", "tau_membrane_ms", "beta", "tau_gain_control_s",
               "truncate"]
        for name in pos:
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("w_surround", "U_amacrine", "theta_amacrine", "gain_control", "U_OFF_A1"):
            v = getattr(self, name)
            if v is None:      # only U_OFF_A1 may be None (the loop above checked the others are numbers)
                continue
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        for name, b in self.bipolar.items():
            if b.n < 0 or b.n > 12 or int(b.n) != b.n:
                raise ValueError(f"bipolar[{name!r}].n must be an integer in 0..12, got {b.n!r}")
            for attr in ("tau1_ms", "tau_rec_s"):
                if not getattr(b, attr) > 0:
                    raise ValueError(f"bipolar[{name!r}].{attr} must be > 0, got {getattr(b, attr)!r}")
            if b.U < 0:
                raise ValueError(f"bipolar[{name!r}].U must be >= 0, got {b.U!r}")
        if not self.ganglion:
            raise ValueError("ganglion must define at least one cell type")
        for name, g in self.ganglion.items():
            if g.r_max <= 0:
                raise ValueError(f"ganglion[{name!r}].r_max must be > 0, got {g.r_max!r}")
        if len(self.mosaic) < 1:
            raise ValueError("mosaic must list at least one position")
        return self

    def lesioned(self, *lesions):
        """A copy with parts of the circuit removed.

        Each lesion is a pathway name (``"OFF"``, ``"ONf"``, ``"ONs"``: its weight
        onto every ganglion cell set to 0), ``"A1"`` (amacrine weight 0),
        ``"depression"`` (every ``U`` set to 0, bipolar and amacrine), or
        ``"linear"`` (``"A1"`` and ``"depression"``).
        """
        p = self.copy()
        for lesion in lesions:
            if lesion not in LESIONS:
                raise ValueError(f"lesion must be one of {LESIONS}, got {lesion!r}")
            if lesion in PATHWAYS:
                for g in p.ganglion.values():
                    setattr(g, f"w_{lesion}", 0.0)
            if lesion in ("A1", "linear"):
                for g in p.ganglion.values():
                    g.w_A1 = 0.0
            if lesion in ("depression", "linear"):
                for b in p.bipolar.values():
                    b.U = 0.0
                p.U_amacrine = 0.0
                if p.U_OFF_A1 is not None:
                    p.U_OFF_A1 = 0.0
        return p


COUNTERFACTUALS = {
    "osr-onf": dict(
        file="counterfactual_osr_onf.json", phenomena=("osr",),
        description="OSR cells driven by ON-fast with depression and no ON-slow input (w_ONs = 0); the OSR's "
                    "presence checks pass, its mechanism is not the documented one"),
    "anticipation-gain-control": dict(
        file="counterfactual_anticipation_gain_control.json", phenomena=("anticipation",),
        description="OFF cells without the amacrine (w_A1 = 0) but with Berry-type output gain control; "
                    "anticipation's presence checks pass"),
}
"""Altered simulators whose named phenomena survive with a different mechanism (``docs/recovery.md``): the
ground truth a recovered mechanism must be able to disagree with.  Written by ``scripts/calibrate_insilico.py
--presence-only`` from the shipped calibration; only the listed phenomena are claimed for each."""


def _packaged(filename):
    """A parameter file shipped in ``retina/data``."""
    return InSilicoParams.from_dict(json.loads((resources.files("retina") / "data" / filename).read_text()))


def counterfactual(name):
    """The parameters of the counterfactual circuit ``name`` (:data:`COUNTERFACTUALS`)."""
    if name not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual must be one of {tuple(COUNTERFACTUALS)}, got {name!r}")
    return _packaged(COUNTERFACTUALS[name]["file"])


CALIBRATIONS = {"2026-12-03": "insilico_2026-12-03.json", "2026-11-23": "insilico_2026-11-23.json"}
"""Earlier shipped calibrations by date, kept so that a model fitted to one is still judged against it and named
(:func:`simulator_name`), and so that a recipe can simulate it again (``simulator = "calibration-<date>"``):
2026-11-23, the first calibration (the tuned bundled model's); 2026-12-03, the first inside the physical domain
(the generic bundled model's), which missed the depression-lesion latency check (``docs/insilico.md`` §2.2)."""


def calibration(date):
    """The parameters of the earlier shipped calibration of ``date`` (:data:`CALIBRATIONS`), or the current one
    for ``"shipped"``."""
    if date == "shipped":
        return InSilicoParams.default()
    if date not in CALIBRATIONS:
        raise ValueError(f"calibration must be 'shipped' or one of {tuple(CALIBRATIONS)}, got {date!r}")
    return _packaged(CALIBRATIONS[date])


def simulator_name(params) -> str:
    """A readable name for a parameter set: ``"shipped"`` (the shipped calibration), a counterfactual circuit's
    name (:data:`COUNTERFACTUALS`), ``"calibration-<date>"`` (an earlier shipped calibration,
    :data:`CALIBRATIONS`), or ``"custom-<hash>"`` (the first 8 hex digits of its JSON's SHA-256)."""
    if params == InSilicoParams.default():
        return "shipped"
    for name in COUNTERFACTUALS:
        if params == counterfactual(name):
            return name
    for date in CALIBRATIONS:
        if params == calibration(date):
            return f"calibration-{date}"
    import hashlib

    text = json.dumps(params.to_dict(), sort_keys=True, default=float)
    return "custom-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def named_params(name):
    """The parameters that ``name`` names: ``"shipped"``, a counterfactual circuit (:data:`COUNTERFACTUALS`),
    ``"calibration-<date>"`` (:data:`CALIBRATIONS`) or the path of a parameter file (``.json``); the inverse of
    :func:`simulator_name` for the packaged sets."""
    if not isinstance(name, (str, Path)):
        raise ValueError(f"a simulator name must be a string or a path, got {type(name).__name__}")
    name = str(name)
    if name == "shipped":
        return InSilicoParams.default()
    if name in COUNTERFACTUALS:
        return counterfactual(name)
    if name.startswith("calibration-") and name[len("calibration-"):] in CALIBRATIONS:
        return calibration(name[len("calibration-"):])
    if name.endswith(".json") or Path(name).is_file():
        return InSilicoParams.from_json(name)
    known = ("shipped", *COUNTERFACTUALS, *(f"calibration-{d}" for d in CALIBRATIONS))
    raise ValueError(f"a simulator must be one of {known} or a parameter file (.json), got {name!r}")


SIMULATOR_KEY = "simulator_params"
"""Model metadata key holding the JSON parameters of the in-silico retina a model was fitted to."""


def simulator_metadata(sim) -> dict:
    """What a model fitted to ``sim``'s cells records about it: cell types, positions and parameters."""
    return {"cell_types": json.dumps(sim.cell_types), "cell_positions": json.dumps([[c.y, c.x] for c in sim.cells]),
            SIMULATOR_KEY: json.dumps(sim.params.to_dict())}


def simulator_of(model, given=None):
    """The in-silico retina to judge ``model`` against: ``given`` when one is given (an InSilicoRetina), else the
    one the model records (metadata ``simulator_params``), else the shipped calibration."""
    if given is not None:
        return given
    meta = getattr(model, "metadata", None) or {}
    text = meta.get(SIMULATOR_KEY)
    if text:
        try:
            params = InSilicoParams.from_dict(json.loads(text))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the model's recorded simulator ({SIMULATOR_KEY}) is invalid: {exc}") from None
        return InSilicoRetina(params)
    return InSilicoRetina()


class Cell(NamedTuple):
    """A ganglion cell of the mosaic: its index, type and centre (px)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the cell's number
    type: str
    y: float
    x: float


def _pool_weights(sigma, centres, frame_shape, truncate):
    """Normalised truncated Gaussian pooling ``(H*W, J)`` around each centre."""
    h, w = frame_shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    out = np.zeros((h * w, len(centres)))
    for j, (cy, cx) in enumerate(centres):
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        g = np.exp(-0.5 * d2 / sigma ** 2)
        g[d2 > (truncate * sigma) ** 2] = 0.0
        out[:, j] = (g / g.sum()).ravel()
    return out


class InSilicoRetina:
    """The simulated retina.

    Parameters
    ----------
    params : InSilicoParams, dict, str or Path, optional
        Parameters, a dict of them, or a JSON file; default the calibrated set
        (:meth:`InSilicoParams.default`).
    lesion : str or sequence of str, optional
        Lesions applied on top of ``params`` (see :meth:`InSilicoParams.lesioned`).
    frame_shape : (int, int)
        Movie frame size (default 50 x 50).
    block : int
        Frames simulated per kernel call (bounds memory).
    positions : sequence of (y, x), optional
        Cell centres (px) replacing the grid mosaic, e.g. a dense row of cells
        for population readouts; every ganglion type sits at each position.

    Examples
    --------
    >>> from retina import InSilicoRetina, stimuli
    >>> sim = InSilicoRetina()
    >>> rates = sim.rates(stimuli.flash(-1.0).movie)     # (T, 18) in Hz
    """

    def __init__(self, params=None, *, lesion=None, frame_shape=(50, 50), block=1000, positions=None):
        if params is None:
            params = InSilicoParams.default()
        elif isinstance(params, dict):
            params = InSilicoParams.from_dict(params)
        elif isinstance(params, (str, Path)):
            params = InSilicoParams.from_json(params)
        elif not isinstance(params, InSilicoParams):
            raise ValueError(f"params must be InSilicoParams, a dict or a JSON path, got {type(params).__name__}")
        params.validate()
        if lesion:
            params = params.lesioned(*([lesion] if isinstance(lesion, str) else lesion))
        self.params = params
        self.lesion = tuple([lesion] if isinstance(lesion, str) else (lesion or ()))
        self.frame_shape = tuple(check_int("frame_shape[i]", v, minimum=1) for v in frame_shape)
        self.block = check_int("block", block, minimum=1)
        if positions is None:
            positions = [(float(y), float(x)) for y in params.mosaic for x in params.mosaic]
        self.positions = [(float(y), float(x)) for y, x in positions]
        if not self.positions:
            raise ValueError("positions must list at least one (y, x)")
        self._build()

    # -------------------------------------------------------------- structure
    def _build(self):
        p = self.params
        h, w = self.frame_shape
        cells = []
        for tname in p.ganglion:
            for cy, cx in self.positions:
                if not (0 <= cy < h and 0 <= cx < w):
                    raise ValueError(f"cell position ({cy}, {cx}) lies outside the frame {self.frame_shape}")
                cells.append(Cell(len(cells), tname, cy, cx))
        self.cells = cells
        centres = [(c.y, c.x) for c in cells]
        wg = _pool_weights(p.sigma_ganglion_px, centres, self.frame_shape, p.truncate)
        wa = _pool_weights(p.sigma_amacrine_px, centres, self.frame_shape, p.truncate)
        support = np.flatnonzero((wg != 0).any(1) | (wa != 0).any(1))
        self._pixels = support  # only pixels some cell pools from are simulated
        self._wg = np.ascontiguousarray(wg[support])
        self._wa = np.ascontiguousarray(wa[support])
        bips = [p.bipolar[k] for k in PATHWAYS]
        self._a1_source = 0              # the release the amacrine pools: the OFF pathway's ...
        if p.U_OFF_A1 is not None:       # ... or its own synapse's, a fourth pool with the OFF filter
            bips.append(replace(p.bipolar["OFF"], U=p.U_OFF_A1))
            self._a1_source = len(PATHWAYS)
        self._drive = np.array([b.sign * p.gain for b in bips])
        self._decay = np.array([[np.exp(-DT * 1e3 / b.tau1_ms), np.exp(-DT * 1e3 / (2 * b.tau1_ms))] for b in bips])
        self._stages = np.array([int(b.n) + 1 for b in bips], np.int64)
        self._a2 = np.array([b.a2 for b in bips])
        self._theta = np.array([b.theta for b in bips])
        self._rec = np.array([np.exp(-DT / b.tau_rec_s) for b in bips])
        self._use = np.array([b.U * DT for b in bips])
        g = [p.ganglion[c.type] for c in cells]
        self._w = np.ascontiguousarray([gi.weights() for gi in g])
        self._w_inh = np.array([gi.w_A1 for gi in g])
        self._gtheta = np.array([gi.theta for gi in g])
        self._rmax = np.array([gi.r_max for gi in g])

    @property
    def n_cells(self):
        return len(self.cells)

    @property
    def cell_types(self):
        """Type name of each cell, in cell order."""
        return [c.type for c in self.cells]

    def cells_of(self, cell_type):
        """Indices of the cells of one type."""
        idx = [c.index for c in self.cells if c.type == cell_type]
        if not idx:
            raise ValueError(f"cell_type must be one of {sorted(self.params.ganglion)}, got {cell_type!r}")
        return np.array(idx)

    def __repr__(self):
        types = ", ".join(f"{k}: {sum(c.type == k for c in self.cells)}" for k in self.params.ganglion)
        les = f", lesion={self.lesion}" if self.lesion else ""
        return f"InSilicoRetina({self.n_cells} cells ({types}), frame {self.frame_shape}{les})"

    # -------------------------------------------------------------- state
    def initial_state(self):
        """The state of a retina adapted to grey (the exact fixed point of the dynamics).

        A dict of float64 arrays, updated in place by :meth:`run` so that a long
        movie can be fed block by block; save it to resume a stream.
        """
        n_px, n_k, n_j = len(self._pixels), len(self._use), self.n_cells
        s_max = int(self._stages.max())
        n_rest = np.maximum(-self._theta, 0.0)  # release drive at grey (S = 0)
        dep = np.exp(-self._use * n_rest)
        pool = (1 - self._rec) * dep / (1 - self._rec * dep)
        b_rest = n_rest * (1 - (1 - pool) * self._rec)  # release uses the pool after recovery
        exc = np.repeat(b_rest[:len(PATHWAYS), None], n_j, 1) * self._wg.sum(0)[None, :]
        inh = b_rest[self._a1_source] * self._wa.sum(0)
        a_rest = np.maximum(inh - self.params.theta_amacrine, 0.0)
        rec_a = np.exp(-DT / self.params.tau_rec_amacrine_s)
        dep_a = np.exp(-self.params.U_amacrine * DT * a_rest)
        res_a = (1 - rec_a) * dep_a / (1 - rec_a * dep_a)
        u = np.vstack([self._w.T * exc, -self._w_inh * a_rest * (1 - (1 - res_a) * rec_a)])
        return {"cascade": np.zeros((n_k, 2, s_max, n_px)),
                "pool": np.repeat(pool[:, None], n_px, 1),
                "amacrine": inh.copy(),
                "amacrine_resource": np.full(n_j, 1.0) * res_a,
                "membrane": np.ascontiguousarray(u),
                "gain_control": np.zeros(n_j)}

    def _check_state(self, state):
        ref = self.initial_state()
        if not isinstance(state, dict) or set(state) != set(ref):
            raise ValueError(f"state must be a dict with keys {sorted(ref)} (from initial_state()), got "
                             f"{type(state).__name__}")
        for k, v in ref.items():
            if not isinstance(state[k], np.ndarray) or state[k].shape != v.shape or state[k].dtype != np.float64:
                raise ValueError(f"state[{k!r}] must be a float64 array of shape {v.shape}")

    # -------------------------------------------------------------- simulation
    def _centre_surround(self, movie, be=None):
        p = self.params
        if be is None or be.name == "cpu":
            filt, xp = ndi.gaussian_filter, np
        else:
            import cupyx.scipy.ndimage as cndi

            filt, xp = cndi.gaussian_filter, be.xp
        c = filt(movie, (0, p.sigma_center_px, p.sigma_center_px), mode="constant", truncate=p.truncate)
        s = filt(movie, (0, p.sigma_surround_px, p.sigma_surround_px), mode="constant", truncate=p.truncate)
        return xp.ascontiguousarray((c - p.w_surround * s).reshape(len(movie), -1)[:, self._pixels])

    def drive(self, movie):
        """The centre-surround drive of every simulated pixel, ``(T, pixels)`` float64: the stateless first stage.

        :meth:`run` computes it block by block; computing it elsewhere (e.g.
        on a cluster's workers, :func:`retina.datasets.simulate_dataset`) and
        passing it as ``run(drive=...)`` gives the same result.
        """
        movie = as_float_array("movie", movie, ndim=3, dtype=np.float64)
        if movie.shape[1:] != self.frame_shape:
            raise ValueError(f"movie must have frames of shape {self.frame_shape}, got {movie.shape[1:]}")
        check_physical_movie("movie", movie)
        return self._centre_surround(movie)

    def run(self, movie, *, state=None, progress=False, backend="cpu", drive=None):
        """Simulate a movie; the workhorse behind :meth:`rates` and :meth:`pathways`.

        Parameters
        ----------
        movie : array_like, shape (T, H, W)
            Contrast movie (any real dtype; computed in float64).
        state : dict, optional
            From :meth:`initial_state` or a previous call: the simulation
            continues from it and it is updated in place.  Default: start
            adapted to grey.
        progress : bool
            Show a progress bar over blocks.
        backend : {"cpu", "gpu", "auto"}
            Where the kernels run (float64 on both); results and ``state``
            come back as NumPy arrays.
        drive : ndarray (T, pixels), optional
            The movie's :meth:`drive`, computed beforehand (``movie`` may then be None).

        Returns
        -------
        rates : ndarray (T, n_cells)
            Firing rates in Hz, float64.
        parts : ndarray (T, n_cells, 4)
            Membrane potential split by source: OFF, ONf, ONs release and the
            amacrine (negative); ``parts.sum(-1)`` is the membrane potential.
        """
        from .. import _backend

        be = _backend.resolve(backend)
        kern, xp = be.family("insilico"), be.xp
        if drive is not None:
            drive = as_float_array("drive", drive, shape=(None, len(self._pixels)), dtype=np.float64)
            t_len = len(drive)
        else:
            movie = as_float_array("movie", movie, ndim=3, dtype=np.float64)
            if movie.shape[1:] != self.frame_shape:
                raise ValueError(f"movie must have frames of shape {self.frame_shape}, got {movie.shape[1:]}")
            check_physical_movie("movie", movie)
            t_len = len(movie)
        if state is None:
            state = self.initial_state()
        else:
            self._check_state(state)
        p = self.params
        n_j = self.n_cells
        e_inh = np.exp(-DT * 1e3 / p.tau_amacrine_ms)
        e_mem = np.exp(-DT * 1e3 / p.tau_membrane_ms)
        rec_inh = np.exp(-DT / p.tau_rec_amacrine_s)
        e_gc = np.exp(-DT / p.tau_gain_control_s)
        from .._progress import progress_bar

        dev = be.asarray
        st = {k: dev(v) for k, v in state.items()}
        consts = {k: dev(getattr(self, k)) for k in ("_drive", "_decay", "_a2", "_theta", "_rec", "_use", "_wg",
                                                      "_wa", "_w", "_w_inh", "_gtheta", "_rmax")}
        rates = xp.empty((t_len, n_j))
        parts = xp.empty((t_len, 4, n_j))
        starts = range(0, t_len, self.block)
        for t0 in progress_bar(starts, total=len(starts), desc="simulate", unit="block", enabled=progress):
            if drive is None:
                s = self._centre_surround(dev(movie[t0:t0 + self.block]), be)
            else:
                s = dev(np.ascontiguousarray(drive[t0:t0 + self.block]))
            n_k = len(self._use)
            b = xp.empty((len(s), n_k, len(self._pixels)))
            kern.bipolar_block(s, consts["_drive"], consts["_decay"], self._stages, consts["_a2"], consts["_theta"],
                               consts["_rec"], consts["_use"], st["cascade"], st["pool"], b)
            exc = (b.reshape(-1, b.shape[-1]) @ consts["_wg"]).reshape(len(s), n_k, n_j)
            exc = xp.ascontiguousarray(exc[:, :len(PATHWAYS)])
            inh = xp.ascontiguousarray(b[:, self._a1_source, :] @ consts["_wa"])
            kern.ganglion_block(exc, inh, consts["_w"], consts["_w_inh"], consts["_gtheta"], consts["_rmax"],
                                float(p.beta), e_inh, e_mem, rec_inh, float(p.U_amacrine * DT),
                                float(p.theta_amacrine),
                                float(p.gain_control), e_gc, st["amacrine"], st["amacrine_resource"],
                                st["membrane"], st["gain_control"], rates[t0:t0 + len(s)], parts[t0:t0 + len(s)])
        for k, v in st.items():
            if v is not state[k]:  # copies (the GPU, or a non-contiguous state): write the state back
                state[k][...] = be.to_host(v)
        rates, parts = be.to_host(rates), be.to_host(parts)
        return rates, np.ascontiguousarray(parts.transpose(0, 2, 1))

    def rates(self, movie, *, state=None, progress=False, backend="cpu"):
        """Firing rates ``(T, n_cells)`` in Hz (float64); see :meth:`run`."""
        return self.run(movie, state=state, progress=progress, backend=backend)[0]

    def spikes(self, movie, *, seed=0, rates=None, state=None):
        """Poisson spike counts ``(T, n_cells)`` per 10 ms bin (int32), ``n ~ Poisson(r dt)``.

        Pass ``rates`` to draw from already simulated rates (e.g. repeats).
        """
        if rates is None:
            rates = self.rates(movie, state=state)
        return np.random.default_rng(seed).poisson(np.asarray(rates) * DT).astype(np.int32)

    def pathways(self, movie, *, state=None):
        """Per-pathway input to each cell: ``(T, n_cells, 4)``, sources OFF, ONf, ONs, A1.

        These are the membrane-potential contributions (each source's current
        after the membrane low-pass, which is linear); the amacrine's is
        negative.  They sum to the membrane potential.
        """
        return self.run(movie, state=state)[1]

    def membrane(self, movie, *, state=None):
        """Membrane potential ``(T, n_cells)``."""
        return self.pathways(movie, state=state).sum(-1)

    def output(self, u, cells=None):
        """The output nonlinearity: rate in Hz for membrane potential ``u (..., n_cells)`` (no gain control)."""
        u = np.asarray(u, np.float64)
        idx = slice(None) if cells is None else cells
        x = self.params.beta * (u - self._gtheta[idx])
        return self._rmax[idx] * np.logaddexp(0.0, x) / self.params.beta

    def attribution(self, movie, *, state=None):
        """Exact ground-truth attribution of each cell's rate to its four sources (``docs/insilico.md`` section 4).

        With the output gain control off, ``r = F(u)`` with ``u = sum_k u_k``
        linear in the sources, so integrated gradients along the straight path
        from the grey state give ``A_k = (u_k - u_k0) (F(u) - F(u0)) / (u - u0)``
        exactly (the limit ``F'(u) (u_k - u_k0)`` where ``u = u0``).

        Returns
        -------
        ndarray (T, n_cells, 4)
            Attribution to OFF, ONf, ONs and A1; sums to ``r - r0`` over the last axis.
        """
        if self.params.gain_control > 0:
            raise ValueError("the closed-form attribution needs gain_control = 0 (docs/insilico.md section 4)")
        parts = self.pathways(movie, state=state)
        rest = self.initial_state()["membrane"].T  # (n_cells, 4) grey contributions
        du = parts - rest[None]
        u, u0 = parts.sum(-1), rest.sum(-1)[None]
        f, f0 = self.output(u), self.output(u0)
        dd = u - u0
        small = np.abs(dd) < 1e-9
        x = self.params.beta * (u - self._gtheta)
        slope = self._rmax / (1.0 + np.exp(-x))  # F'(u)
        ratio = np.where(small, slope, (f - f0) / np.where(small, 1.0, dd))
        return du * ratio[..., None]
