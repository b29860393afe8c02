"""What a phenomenon is: the :class:`Phenomenon` object, its result and its checks, and the registry.

A phenomenon is one module of this package defining one :class:`Phenomenon`
and registering it with :func:`register`.  Everything else (``explain``,
``sweep``, the command line's choices, the calibration script, the recipe and
the tests) reads :data:`REGISTRY`, so adding a phenomenon is adding a module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Phenomenon", "PhenomenonResult", "Check", "REGISTRY", "register", "unregister", "get", "names"]


@dataclass
class PhenomenonResult:
    """One experiment: its conditions, stimuli, responses and measures.

    Attributes
    ----------
    name : str
        The phenomenon's registry name.
    conditions : list of dict
        The stimulus parameters swept, one dict per condition.
    responses : list of ndarray
        The analysed cells' responses ``(T, n_analysed)`` per condition (Hz,
        row ``t`` = frame ``t``).
    events : list of dict
        Each condition's stimulus events (frame indices).
    per_condition : list of dict
        The measure per condition (plain numbers).
    measures : dict
        The phenomenon's summary numbers.
    cells : ndarray
        Indices of the analysed cells.
    params : dict
        The protocol's fixed parameters.
    stimuli : list of callable
        Per condition, a function of no argument that rebuilds its
        :class:`retina.stimuli.Stimulus` (:meth:`stimulus`); movies are not
        kept.
    windows : list of (int, int)
        Per condition, the window of interest ``[lo, hi)`` in frames.
    reduced : list of ReducedModel
        Per condition, for CNNs (``explain=True``): important channels, pruned network, fidelity.
    reduced_measures : list of dict
        The measure of the pruned network's response, per condition.
    inhibitory : list of dict
        Latency and anticipation, CNNs: the layer-2 channels with a negative
        net effect in some condition (``channel``, ``conditions``,
        ``share``, ``delay_ms`` averaged over them).
    ablated_measures : list of dict
        The measure per condition with the ablated channels clamped to baseline.
    """

    name: str
    conditions: list
    responses: list
    events: list
    per_condition: list
    measures: dict
    cells: np.ndarray
    params: dict = field(default_factory=dict)
    reduced: list = field(default_factory=list)
    reduced_measures: list = field(default_factory=list)
    inhibitory: list = field(default_factory=list)
    ablated_measures: list = field(default_factory=list)
    stimuli: list = field(default_factory=list, repr=False)
    windows: list = field(default_factory=list)

    def add(self, condition, response, events, measure, *, stimulus=None, window=None):
        """Record one condition: its parameters, response, events, measure, stimulus builder and window of
        interest (``(lo, hi)`` frames, or a phenomenon's ``window(result, i)`` evaluated on what was just
        recorded); returns the window."""
        self.conditions.append(condition)
        self.responses.append(response)
        self.events.append(events)
        self.per_condition.append(measure)
        self.stimuli.append(stimulus)
        if callable(window):
            window = window(self, len(self.conditions) - 1)
        self.windows.append(None if window is None else (int(window[0]), int(window[1])))
        return self.windows[-1]

    def add_reduced(self, reduced, measure):
        if reduced is not None:
            self.reduced.append(reduced)
            self.reduced_measures.append(measure)

    def stimulus(self, i):
        """Condition ``i``'s stimulus, rebuilt from its parameters."""
        build = self.stimuli[i]
        if build is None:
            raise ValueError(f"condition {i} of {self.name!r} recorded no stimulus")
        return build()

    @property
    def channel_types(self):
        """Types of the channels the reductions kept, with their mean share of ``|A|``."""
        out: dict = {}
        for red in self.reduced:
            for ch in red.channels:
                out[ch["type"]] = out.get(ch["type"], 0.0) + ch["share"] / len(self.reduced)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __repr__(self):
        nums = ", ".join(f"{k}={v:.3g}" for k, v in self.measures.items() if isinstance(v, float))
        return f"PhenomenonResult({self.name!r}, {len(self.conditions)} conditions, {nums})"


@dataclass(frozen=True)
class Check:
    """One pass criterion, evaluated: a value and the closed range ``[low, high]`` it must fall in.

    ``scale`` turns a miss into a normalised violation (:attr:`violation`, 0
    when it passes), the unit of the calibration score.  A signature check
    named ``<phenomenon>_lesion_<part>`` pins down the mechanism (it runs a
    lesioned simulator); every other check tests that the phenomenon is there
    (:attr:`presence`).
    """

    name: str
    description: str
    value: float
    low: float = -np.inf
    high: float = np.inf
    scale: float = 1.0

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.value) and self.low <= self.value <= self.high)

    @property
    def presence(self) -> bool:
        """A check that the phenomenon is there, not one of the lesion checks that pin down its mechanism
        (counterfactual circuits are calibrated on these alone)."""
        return "_lesion_" not in self.name

    @classmethod
    def near(cls, name, description, value, target, tolerance):
        """``value`` within ``+-tolerance`` (a fraction) of ``target``, whatever the target's sign."""
        lo, hi = (1 - tolerance) * target, (1 + tolerance) * target
        return cls(name, description, value, low=min(lo, hi), high=max(lo, hi), scale=max(abs(target), 1.0))

    @property
    def violation(self) -> float:
        if not np.isfinite(self.value):
            return 5.0
        return float(max(0.0, self.low - self.value, self.value - self.high) / self.scale)

    def __str__(self):
        rng = (f">= {self.low:g}" if np.isinf(self.high) else f"<= {self.high:g}" if np.isinf(self.low)
               else f"in [{self.low:g}, {self.high:g}]")
        return f"[{'x' if self.passed else ' '}] {self.description}: {self.value:.4g} ({rng})"


@dataclass(frozen=True)
class Phenomenon:
    """A phenomenon: its protocol, what it measures, where to look, and when it counts as present.

    Attributes
    ----------
    name : str
        Registry name (``retina sweep MODEL NAME``).
    title : str
        Human-readable name.
    run : callable
        ``run(model, **params) -> PhenomenonResult``: builds the stimuli,
        runs any model with ``rates(movie)`` (contrast units), measures, and
        for CNNs attributes and reduces.  Its keyword arguments are the
        sweepable parameters.
    list_params : tuple of str
        Parameters of ``run`` that take a list of conditions (a scalar sweep
        value becomes a one-item list).
    key_measure : str
        The one summary number the phenomenon is judged by (lesion effects).
    cell_type : str
        The simulator cell type it is measured on (``"OSR"``, ``"OFF"``).
    row : bool
        A bar protocol read out on a row of cells (the simulator is then
        built on :data:`retina.insilico.ROW`).
    lesions : tuple of str
        The simulator lesions whose effect on ``key_measure`` is reported.
    window : callable
        ``window(result, i) -> (lo, hi)``: condition ``i``'s window of
        interest in frames (also stored in ``result.windows``).
    shows : callable
        ``shows(measures) -> bool``: does a model show the phenomenon in the
        simulator's direction (the presence criterion)?
    presence_measure : str
        The measure ``shows`` reads first (reported beside its verdict).
    signatures : callable
        ``signatures(results) -> list[Check]``: the simulator's acceptance
        tests; ``results`` maps ``None`` (intact) and each name in
        ``signature_lesions`` to a result.
    signature_lesions : mapping
        Lesion name -> extra ``run`` options for the lesioned runs the
        signatures need.
    mechanism : callable
        ``mechanism(pathway_shares, type_shares, result) -> dict[str, bool]``:
        the criteria that can be checked from a CNN's layer-1 attributions
        and ablations.
    known_cells_options : mapping
        ``run`` options for a model that knows its cells' positions.
    absent_value : float
        The key measure's value when the phenomenon is absent (no OSR: 0 Hz;
        no latency shift: 0 ms; no burst: a ratio of 1; no lead: 0 px); a key
        measure that cannot be measured counts as this (:mod:`retina.recovery`).
    condition_measure : str
        The per-condition measure shown beside the simulator's (fidelity).
    held_out : mapping
        ``run`` options of the held-out protocol: values other than the
        defaults, the tests' and any training or selection protocol, kept for
        judging models (:meth:`judge_model`).
    judge : callable
        ``judge(model_result, sim_result) -> list[Check]``: does a model
        reproduce the phenomenon at the thresholds of ``docs/recovery.md``, beside the simulator?
    """

    name: str
    title: str
    run: Callable[..., PhenomenonResult]
    list_params: tuple = ()
    key_measure: str = ""
    cell_type: str = "OFF"
    row: bool = False
    lesions: tuple = ()
    window: Callable[[PhenomenonResult, int], tuple] | None = None
    shows: Callable[[Mapping], bool] | None = None
    presence_measure: str = ""
    signatures: Callable[[Mapping], list] | None = None
    signature_lesions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mechanism: Callable[..., dict] | None = None
    known_cells_options: Mapping[str, Any] = field(default_factory=dict)
    absent_value: float = 0.0
    condition_measure: str = ""
    held_out: Mapping[str, Any] = field(default_factory=dict)
    judge: Callable[[PhenomenonResult, PhenomenonResult], list] | None = None

    def __call__(self, model, **params) -> PhenomenonResult:
        return self.run(model, **params)

    def simulator(self, sim=None, *, lesion=None):
        """The in-silico retina this phenomenon is measured on: ``sim``'s parameters (default the calibrated
        set) with ``lesion``, on the dense row :data:`retina.insilico.ROW` for bar protocols (``row``)."""
        from ..insilico import ROW, InSilicoRetina

        params = None if sim is None else sim.params
        positions = ROW if self.row else (None if sim is None else sim.positions)
        return InSilicoRetina(params, lesion=lesion, positions=positions)

    def check_simulator(self, sim=None, *, intact=None) -> list:
        """Run the protocol on the simulator (intact, and lesioned as ``signature_lesions`` asks) and
        evaluate :attr:`signatures`: a list of :class:`Check`.  ``intact`` reuses a result already run."""
        if self.signatures is None:
            return []
        base = self.simulator(sim)
        results: dict = {None: intact if intact is not None else self.run(base, **self.options_for(base))}
        for lesion, options in self.signature_lesions.items():
            other = self.simulator(sim, lesion=lesion)
            results[lesion] = self.run(other, **{**self.options_for(other), **options})
        return self.signatures(results)

    def judge_model(self, model, sim=None, *, sim_result=None) -> list:
        """Run the held-out protocol (:attr:`held_out`) on ``model`` (wrapped by
        :func:`retina.phenomena.probe`) and on its simulator ``sim`` (default the one the model records,
        :func:`retina.insilico.simulator_of`) and return :attr:`judge`'s checks.  ``sim_result`` reuses the
        simulator's held-out run (:meth:`held_out_result`) when several models are judged against one simulator."""
        from ..insilico import simulator_of
        from .probe import probe

        if self.judge is None:
            return []
        m = probe(model)
        mres = self.run(m, explain=False, **{**self.options_for(m), **self.held_out})
        sres = sim_result if sim_result is not None else self.held_out_result(simulator_of(model, sim))
        return self.judge(mres, sres)

    def held_out_result(self, sim=None) -> PhenomenonResult:
        """The held-out protocol (:attr:`held_out`) run on the simulator ``sim`` (default the calibrated one)."""
        base = self.simulator(sim)
        return self.run(base, **{**self.options_for(base), **self.held_out})

    def options_for(self, model) -> dict:
        """Extra ``run`` options for ``model`` (those for models that know their cells' positions)."""
        return dict(self.known_cells_options) if getattr(model, "cells", None) is not None else {}


REGISTRY: dict[str, Phenomenon] = {}
"""Every phenomenon by name, in registration order."""


def register(phenomenon: Phenomenon, *, replace: bool = False) -> Phenomenon:
    """Add ``phenomenon`` to :data:`REGISTRY` (``replace=True`` to overwrite a name); returns it."""
    if not isinstance(phenomenon, Phenomenon):
        raise ValueError(f"phenomenon must be a Phenomenon, got {type(phenomenon).__name__}")
    if phenomenon.name in REGISTRY and not replace:
        raise ValueError(f"a phenomenon named {phenomenon.name!r} is registered already")
    REGISTRY[phenomenon.name] = phenomenon
    return phenomenon


def unregister(name: str) -> None:
    """Remove ``name`` from :data:`REGISTRY` (for tests that register a phenomenon of their own)."""
    REGISTRY.pop(name, None)


def get(name: str | Phenomenon) -> Phenomenon:
    """The registered phenomenon ``name``; ``ValueError`` listing the known ones otherwise."""
    if isinstance(name, Phenomenon):
        return name
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"phenomenon must be one of {tuple(REGISTRY)}, got {name!r}") from None


def names() -> tuple:
    """The registered phenomena's names."""
    return tuple(REGISTRY)


def kinetics_checks(sim=None) -> list:
    """The circuit's identity beside its phenomena: each bipolar pathway of the simulator ``sim`` (default the
    shipped calibration) keeps its documented speed (:data:`retina.insilico.PATHWAY_SPEEDS`): the time to peak of
    its filter (:meth:`retina.insilico.BipolarParams.time_to_peak_ms`) at most :data:`retina.reduction.FAST_MS`
    for a fast pathway, at least :data:`retina.reduction.SLOW_MS` for a slow one.  A list of :class:`Check`
    named ``kinetics_<pathway>_<speed>``; the calibration scores them with the phenomena's signatures."""
    from ..insilico import PATHWAY_SPEEDS, InSilicoParams
    from ..reduction import FAST_MS, SLOW_MS

    params = sim.params if sim is not None else InSilicoParams.default()
    out = []
    for name, speed in PATHWAY_SPEEDS.items():
        ttp = params.bipolar[name].time_to_peak_ms()
        bound = dict(high=FAST_MS) if speed == "fast" else dict(low=SLOW_MS)
        out.append(Check(f"kinetics_{name}_{speed}", f"time to peak of the {name} filter (ms), a {speed} pathway",
                         ttp, scale=10.0, **bound))
    return out
