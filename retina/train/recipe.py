"""Recipes as data: a model's whole training (data, stages, weights, seeds) in one TOML file, run by :func:`run`.

A recipe names its streams (simulated datasets: kind, minutes, seed,
generator options) and its stages (epochs, learning rate, seed, the share of
mini-batch runs from each stream, loss weights, event weights, validation,
model selection).  :func:`run` simulates the streams with the calibrated
in-silico retina (resumable), trains stage after stage (each from the
previous stage's best epoch, each resumable from its checkpoint), evaluates,
and writes ``model.h5`` whose provenance holds the recipe's full text, the
package version and the git commit, and a report (JSON and Markdown).
``recipes/generic.toml`` is the bundled default model's recipe (generic stimuli only) and
``recipes/tuned.toml`` the protocol-tuned model's; ``docs/recipes.md``
documents every key.

Event weights come from the events stored with each dataset
(:data:`retina.datasets.EVENTS`): nothing is re-detected from pixels.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int
from .._version import __version__
from .config import TrainConfig
from .loop import train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Recipe", "Stream", "Stage", "load_recipe", "run", "run_seeds", "seed_summary", "reversal_weights",
           "flash_weights", "RECIPES"]

log = logging.getLogger("retina.train")

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
"""Where the recipes shipped with the package live (``load_recipe("generic")``)."""
REVERSAL_FRAMES = 50   # frames after a bar turns back weighted by reversal_boost (the burst comes ~330 ms later)
FLASH_FRAMES = 30      # frames from a flash's onset weighted by flash_boost (the latency window is 150 ms)
BASE_STREAMS = ("natural", "whitenoise")


@dataclass(frozen=True)
class Stream:
    """A simulated training stream: a dataset kind (:data:`retina.datasets.KINDS`), its length and seed."""

    name: str
    kind: str
    minutes: float
    seed: int
    options: dict = field(default_factory=dict)
    validate_share: float = 0.0
    """Share of the stream's end held out to validate the stages that train on it (0: none)."""
    test_clips: int = 30
    clip_seconds: float = 10.0
    repeats: int = 20
    """The held-out test set: clips of ``clip_seconds``, each with ``repeats`` Poisson repeats."""


@dataclass(frozen=True)
class Stage:
    """One training stage (see ``docs/recipes.md``)."""

    name: str
    epochs: int
    lr: float
    seed: int
    windows: int = 30000
    noise_share: float = 0.5
    shares: dict = field(default_factory=dict)
    loss: dict = field(default_factory=dict)
    reversal_boost: float = 1.0
    flash_boost: float = 1.0
    validation: str = "per-stream"
    init: str = "previous"
    patience: int | None = None
    lr_patience: int | None = None
    select: str = "validation"
    select_wn: float = 0.0
    noise: float | None = None
    freeze: tuple = ()


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe; ``text`` is the TOML it was read from (stored in the model's provenance)."""

    name: str
    seed: int
    response: str
    val_share: float
    streams: dict
    stages: tuple
    text: str = ""
    source: str = ""
    model: dict = field(default_factory=dict)
    """The architecture (``[model]``: ``history``, ``channels``, ``kernel_sizes``; :data:`MODEL_KEYS`), default
    :class:`~retina.train.TrainConfig`'s (40 frames, 8 and 8 channels, kernels 15 and 11)."""
    simulator: str = ""
    """The in-silico retina that makes the data: ``""`` for the shipped calibration, the name of a
    counterfactual circuit (:data:`retina.insilico.COUNTERFACTUALS`), an earlier shipped calibration
    (``"calibration-<date>"``, :data:`retina.insilico.CALIBRATIONS`), or the absolute path of a parameter file
    (``.json``, written by :meth:`~retina.insilico.InSilicoParams.to_json`; a recipe file names it relative to
    itself)."""


MODEL_KEYS = ("history", "channels", "kernel_sizes")
_STAGE_KEYS = {f for f in Stage.__dataclass_fields__}
_STREAM_KEYS = {"kind", "minutes", "seed", "options", "validate_share", "test_clips", "clip_seconds", "repeats"}


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe: a TOML file's path, or the name of one shipped with the package (``"generic"``, ``"tuned"``)."""
    p = Path(path)
    if not p.suffix and not p.exists():
        p = RECIPES / f"{path}.toml"
        if not p.is_file():
            shipped = sorted(f.stem for f in RECIPES.glob("*.toml"))
            raise FileNotFoundError(f"recipe must be a TOML file or one of the shipped recipes {shipped}, got "
                                    f"{str(path)!r}" + (" (the protocol-tuned recipe once called 'default' is "
                                                         "'tuned')" if str(path) == "default" else ""))
    if not p.is_file():
        raise FileNotFoundError(f"no recipe file at {str(p)!r}")
    text = p.read_text()
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {str(p)!r} is not valid TOML: {exc}") from None
    return parse_recipe(d, text=text, source=str(p))


def parse_recipe(d, *, text="", source="<dict>"):
    """A :class:`Recipe` from a TOML table, with errors naming the key, the expectation and the value."""
    from ..datasets import KINDS

    def need(table, key, where):
        if key not in table:
            raise ValueError(f"recipe {source}: {where} needs the key {key!r}")
        return table[key]

    streams = {}
    for name, s in need(d, "streams", "the recipe").items():
        bad = set(s) - _STREAM_KEYS
        if bad:
            raise ValueError(f"recipe {source}: stream {name!r} has unknown keys {sorted(bad)}; "
                             f"known: {sorted(_STREAM_KEYS)}")
        kind = need(s, "kind", f"stream {name!r}")
        if kind not in KINDS:
            raise ValueError(f"recipe {source}: stream {name!r} kind must be one of {tuple(KINDS)}, got {kind!r}")
        minutes = float(need(s, "minutes", f"stream {name!r}"))
        if not minutes > 0:
            raise ValueError(f"recipe {source}: stream {name!r} minutes must be > 0, got {minutes}")
        streams[name] = Stream(name, kind, minutes, int(need(s, "seed", f"stream {name!r}")),
                               dict(s.get("options", {})), float(s.get("validate_share", 0.0)),
                               int(s.get("test_clips", 30)), float(s.get("clip_seconds", 10.0)),
                               int(s.get("repeats", 20)))
    missing = [b for b in BASE_STREAMS if b not in streams]
    if missing:
        raise ValueError(f"recipe {source}: the streams {missing} are required (the natural and white-noise base)")
    stages = []
    for i, st in enumerate(need(d, "stages", "the recipe")):
        bad = set(st) - _STAGE_KEYS
        if bad:
            raise ValueError(f"recipe {source}: stage {i + 1} has unknown keys {sorted(bad)}; "
                             f"known: {sorted(_STAGE_KEYS)}")
        st = dict(st)
        st.setdefault("name", f"stage {i + 1}")
        st["freeze"] = tuple(st.get("freeze", ()))
        stage = Stage(**st)
        unknown = [k for k in list(stage.shares) + list(stage.loss) if k not in streams]
        if unknown:
            raise ValueError(f"recipe {source}: stage {stage.name!r} names streams {unknown} that the recipe "
                             "does not declare")
        if any(k in BASE_STREAMS for k in stage.shares):
            raise ValueError(f"recipe {source}: stage {stage.name!r}: the base streams' shares come from noise_share")
        if not (stage.epochs >= 1 and stage.lr > 0 and 0 <= stage.noise_share <= 1
                and 0 <= sum(stage.shares.values()) < 1):
            raise ValueError(f"recipe {source}: stage {stage.name!r} needs epochs >= 1, lr > 0, noise_share in [0, 1] "
                             "and stream shares summing to less than 1")
        for key, allowed in (("validation", ("pooled", "per-stream")),
                             ("init", ("previous", "none", *PLANTED_INITS)),
                             ("select", ("validation", "phenomena"))):
            if getattr(stage, key) not in allowed:
                raise ValueError(f"recipe {source}: stage {stage.name!r} {key} must be one of {allowed}, "
                                 f"got {getattr(stage, key)!r}")
        if stage.reversal_boost <= 0 or stage.flash_boost < 1 or not 0 <= stage.select_wn < 1:
            raise ValueError(f"recipe {source}: stage {stage.name!r} needs reversal_boost > 0, flash_boost >= 1 and "
                             "select_wn in [0, 1)")
        stages.append(stage)
    if not stages:
        raise ValueError(f"recipe {source}: no stages")
    val_share = float(d.get("val_share", 0.025))
    if not 0 < val_share < 0.5:
        raise ValueError(f"recipe {source}: val_share must be in (0, 0.5), got {val_share}")
    response = d.get("response", "rate")
    model = dict(d.get("model", {}))
    bad = set(model) - set(MODEL_KEYS)
    if bad:
        raise ValueError(f"recipe {source}: [model] has unknown keys {sorted(bad)}; known: {list(MODEL_KEYS)}")
    try:
        arch = TrainConfig(**model).validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"recipe {source}: [model] {exc}") from None
    model = {k: getattr(arch, k) for k in model}   # as TrainConfig normalises them (tuples of ints)
    from ..insilico import CALIBRATIONS, COUNTERFACTUALS, InSilicoParams

    simulator = d.get("simulator", "")
    earlier = tuple(f"calibration-{date}" for date in CALIBRATIONS)
    if simulator not in ("",) + tuple(COUNTERFACTUALS) + earlier:
        if not (isinstance(simulator, str) and simulator.endswith(".json")):
            raise ValueError(f"recipe {source}: simulator must be '' (the shipped calibration), a counterfactual "
                             f"circuit {tuple(COUNTERFACTUALS)}, an earlier calibration {earlier} or a parameter "
                             f"file (.json), got {simulator!r}")
        here = Path(source).parent if Path(source).is_file() else Path.cwd()
        simulator = str((here / simulator).resolve())
        try:
            InSilicoParams.from_json(simulator)
        except ValueError as exc:
            raise ValueError(f"recipe {source}: simulator: {exc}") from None
    return Recipe(str(d.get("name", Path(source).stem)), int(d.get("seed", 0)), response, val_share, streams,
                  tuple(stages), text, source, model, simulator)


# ------------------------------------------------------------------ event weights
def reversal_weights(events, boost, n_frames):
    """Per-frame loss weights of a moving-bar stream: ``boost`` for the ``REVERSAL_FRAMES`` frames after each
    turn of a bar (the stored ``reversal`` events), else 1."""
    w = np.ones(n_frames)
    for t in np.flatnonzero(np.asarray(events["reversal"])[:n_frames]):
        w[t:t + REVERSAL_FRAMES] = boost
    return w


def flash_weights(events, boost, n_frames):
    """Per-frame loss weights of a flash stream: the ``FLASH_FRAMES`` frames from each flash's onset weigh
    ``min(boost, 1 / c**2)`` for a flash of contrast ``c`` relative to the strongest (weak flashes drive the
    rates little, so the Poisson loss barely sees how late their responses peak), else 1."""
    onsets = np.flatnonzero(np.asarray(events["flash_onset"])[:n_frames])
    strength = np.abs(np.asarray(events["flash_contrast"], np.float64)[onsets])
    w = np.ones(n_frames)
    if not len(onsets):
        return w
    for t, c in zip(onsets, strength / strength.max()):
        w[t:t + FLASH_FRAMES] = np.maximum(w[t:t + FLASH_FRAMES], min(boost, 1.0 / c ** 2))
    return w


def _event_weights(stream, events, stage, n_frames):
    if stream.kind == "motion" and stage.reversal_boost != 1:
        return reversal_weights(events, stage.reversal_boost, n_frames)
    if stream.kind == "flashes" and stage.flash_boost != 1:
        return flash_weights(events, stage.flash_boost, n_frames)
    return None


# ------------------------------------------------------------------ running
def git_commit(path=None):
    """The git commit of the checkout holding ``path`` (this package by default), or ``"unknown"``."""
    where = Path(path or __file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10,
                             check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return out.stdout.strip() + ("+modified" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def simulator_params(simulator):
    """The parameters a recipe's ``simulator`` names (:attr:`Recipe.simulator`; ``None``: the shipped ones)."""
    from ..insilico import named_params

    return named_params(simulator) if simulator else None


SEED_STRIDE = 1000
"""A recipe's ``seed`` s trains each stage with the stage's seed + ``SEED_STRIDE * s`` (0: the stages' own)."""


def _check_dataset(path, sim):
    """A finished dataset file is reused only if the simulator that made it is the one asked for now."""
    import h5py

    from ..datasets import simulated_params

    with h5py.File(path, "r") as f:
        params = simulated_params(f.attrs)
    if params != json.loads(json.dumps(sim.params.to_dict())):
        raise ValueError(f"the dataset {str(path)!r} was simulated with other in-silico parameters than the "
                         "recipe's simulator; delete it to simulate it again")


def _simulator(recipe):
    """The in-silico retina that makes a recipe's data, its cells at the assessment's positions."""
    from ..insilico import InSilicoRetina
    from . import assess

    return InSilicoRetina(simulator_params(recipe.simulator), positions=assess.cell_positions())


PLANTED_BN_FRAMES = 4000   # frames (half natural, half white noise) whose layer-1 statistics set planted thresholds
PLANTED_INITS = {"planted": "pathway filters", "counterparts": "parts' best layer-1 channels",
                 "fitted": "planted control's layer-1 channels", "planted-model": "planted control's channels"}
"""Stage ``init`` values that set layer 1 from the simulator (``planted-model``: every layer; docs/recipes.md)."""


def _planted_layer1(kind, sim, arch):
    """Layer 1 set from ``sim`` for ``init = kind``: ``(w1 (C, history, k, k), names, cuts, norm, model)``, each
    filter of unit norm, in contrast units; ``cuts`` (C,) are the channels' thresholds for that filter, or None;
    ``norm`` (C,) each filter's norm before; ``model`` the planted control for ``"planted-model"``, else None.

    ``"planted"``: the simulator's pathway filters (:func:`retina.recovery.planted_filters`; no thresholds);
    ``"counterparts"``: each part's best layer-1 channel, depression's included, with its threshold
    (:func:`retina.recovery.layer1_counterparts`, about 30 s); ``"fitted"`` and ``"planted-model"``: the
    planted control's seven channels, each pathway's drive, the amacrine's output and each pool's loss fitted in
    least squares, with their thresholds (:func:`retina.recovery.planted_model`, about 10 s; for
    ``"planted-model"`` layers 2-3 follow from :func:`_planted_layers23`).
    """
    from ..recovery import PARTS, layer1_counterparts, planted_filters, planted_model

    if kind == "planted":
        w1, names = planted_filters(sim, history=arch.history, kernel_size=arch.kernel_sizes[0])
        return w1, names, None, np.ones(len(w1)), None
    if kind in ("fitted", "planted-model"):
        pm = planted_model(sim, history=arch.history, kernel_sizes=tuple(arch.kernel_sizes),
                           frame_shape=sim.frame_shape)
        w1 = np.asarray(pm.w1, np.float64)
        norm = np.sqrt((w1 ** 2).sum(axis=(1, 2, 3)))
        cuts = -np.asarray(pm.shift1, np.float64).reshape(-1)
        return (w1 / norm[:, None, None, None], pm.metadata["planted_channels"].split(","), cuts / norm, norm,
                pm if kind == "planted-model" else None)
    cp = layer1_counterparts(sim, history=arch.history, kernel_size=arch.kernel_sizes[0], frame_shape=sim.frame_shape)
    w1 = np.stack([cp[p]["w1"] for p in PARTS])
    norm = np.sqrt((w1 ** 2).sum(axis=(1, 2, 3)))
    return (w1 / norm[:, None, None, None], list(PARTS), np.array([-cp[p]["shift"] for p in PARTS]) / norm, norm,
            None)


def _threshold_norm(w1, cuts, stats, sample, arch):
    """Layer-1 batch norm (``g1``, ``b1``) that keeps each planted channel's threshold: with the batch's
    statistics close to ``sample``'s, ``BN(c) = c + mean * sum(w) - cut`` for the correlation ``c`` of the
    z-scored movie with ``w1 * std``, i.e. the contrast-unit filter ``w1`` minus its threshold ``cut``."""
    from ..model import RetinaCNN

    c1, _, k, _ = w1.shape
    k2 = arch.kernel_sizes[1]
    probe = RetinaCNN(w1 * stats["std"], np.ones((c1, 1, 1)), np.zeros((c1, 1, 1)), np.zeros((1, c1, k2, k2)),
                      np.ones((1, 1, 1)), np.zeros((1, 1, 1)), np.zeros((1, (sample.shape[1] - k - k2 + 2)
                                                                         * (sample.shape[2] - k - k2 + 2))),
                      np.ones(1), np.zeros(1), frame_shape=sample.shape[1:])
    corr = np.asarray(probe.layer1(sample, dtype=np.float64))          # (windows, C, H1, W1)
    mu, sd = corr.mean(0), np.sqrt(corr.var(0) + arch.bn_eps)     # the batch norm divides by sqrt(var + eps)
    offset = stats["mean"] * w1.sum(axis=(1, 2, 3)) - cuts
    return {"g1": sd.astype(np.float32), "b1": (mu + offset[:, None, None]).astype(np.float32)}


def _planted_layers23(pm, w1_norm, sample, stats, bn_eps):
    """Layers 2-3 of the planted control ``pm`` in the trainer's parameters, for ``init = "planted-model"``:
    ``w2``, ``g2``, ``b2``, ``w3`` and ``b3``.

    With layer 1 set by :func:`_threshold_norm` each channel's output is the planted channel's divided by its
    filter's norm ``w1_norm``, so ``w2`` is scaled back by it; the layer-2 batch norm is set from the statistics
    of the planted layer-2 input over ``sample`` (z-scored frames, ``stats`` their normalisation) so that, with
    batch statistics close to those, it is the planted affine map (``bn_eps``: the batch norm's epsilon).
    """
    from .._backend import resolve

    contrast = np.asarray(sample, np.float64) * stats["std"] + stats["mean"]
    corr1 = np.asarray(pm.layer1(contrast, dtype=np.float32), np.float32)
    h1 = np.maximum(corr1 * np.asarray(pm.scale1, np.float32) + np.asarray(pm.shift1, np.float32), 0.0)
    w2 = np.ascontiguousarray(pm.w2, np.float32)
    n, _, h, w = h1.shape
    k2 = w2.shape[-1]
    c2 = resolve("cpu").kernels.corr2d(np.ascontiguousarray(h1), w2,       # the trainer's own layer-2 kernel
                                       np.empty((n, len(w2), h - k2 + 1, w - k2 + 1), np.float32))
    mu, var = c2.mean(0, dtype=np.float64), c2.var(0, dtype=np.float64)
    scale2 = np.broadcast_to(np.asarray(pm.scale2, np.float64), mu.shape)
    shift2 = np.broadcast_to(np.asarray(pm.shift2, np.float64), mu.shape)
    f32 = np.float32
    return {"w2": (w2 * np.asarray(w1_norm, np.float32)[None, :, None, None]).astype(f32),
            "g2": (np.sqrt(var + bn_eps) * scale2).astype(f32), "b2": (mu * scale2 + shift2).astype(f32),
            "w3": np.asarray(pm.w3, f32) * np.asarray(pm.scale3, f32)[:, None], "b3": np.asarray(pm.shift3, f32)}


def _simulate_streams(recipe, sim, data_path, progress=False) -> dict:
    """Each stream's dataset in ``data_path``: simulated by ``sim``, or a finished file reused after checking
    that ``sim`` made it (delete a file to simulate it again)."""
    from ..datasets import simulate_dataset

    data_path.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, s in recipe.streams.items():
        paths[name] = data_path / f"{name}.h5"
        if paths[name].exists():
            _check_dataset(paths[name], sim)
        else:
            simulate_dataset(paths[name], s.kind, retina=sim, train_minutes=s.minutes, seed=s.seed,
                             test_clips=s.test_clips, clip_s=s.clip_seconds, repeats=s.repeats,
                             stimulus_options=s.options or None, progress=progress)
    return paths


def run(recipe: Recipe | str | Path, out_dir: str | Path, *, progress: bool = False,
        max_stages: int | None = None, seed: int | None = None, data_dir: str | Path | None = None) -> tuple:
    """Run ``recipe`` (a :class:`Recipe`, a TOML path or a shipped name) in ``out_dir``.

    Datasets, checkpoints, ``model.h5``, ``report.json`` and ``report.md`` go
    to ``out_dir``; every step resumes from what an interrupted run left
    there.  ``max_stages`` stops after that many stages (for quick checks).
    ``seed`` replaces the recipe's seed (each stage then trains with its seed
    + :data:`SEED_STRIDE` x ``seed``: independent models on the same data);
    ``data_dir`` holds the simulated datasets instead of ``out_dir``, so that
    several seeds share them.  A finished dataset made by another simulator is
    refused.  Returns ``(model, report)``.
    """
    from .. import phenomena as P  # noqa: F401  (registers the phenomena the report measures)
    from ..datasets import load_dataset
    from ..insilico import simulator_metadata
    from ..reduction import classify_channels
    from . import assess
    from .loss import evaluate

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if seed is not None:
        recipe = replace(recipe, seed=check_int("seed", seed, minimum=0))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    sim = _simulator(recipe)
    planted, cuts, norm, pm = None, None, None, None
    arch = TrainConfig(**recipe.model).validate()
    kind = next((st.init for st in recipe.stages if st.init in PLANTED_INITS), None)
    if kind is not None:   # checked before hours of simulation
        planted, names, cuts, norm, pm = _planted_layer1(kind, sim, arch)
        if arch.channels[0] != len(names):
            raise ValueError(f"recipe {recipe.source or recipe.name}: init = \"{kind}\" sets layer 1 to the "
                             f"simulator's {len(names)} {PLANTED_INITS[kind]} {names}, so [model] channels must "
                             f"start with {len(names)}; got {list(arch.channels)}")
        if pm is not None and arch.channels[1] != pm.w2.shape[0]:
            raise ValueError(f"recipe {recipe.source or recipe.name}: init = \"{kind}\" sets layer 2 to the planted "
                             f"control's {pm.w2.shape[0]} channels (each pathway's release and the amacrine), so "
                             f"[model] channels must be [{len(names)}, {pm.w2.shape[0]}]; got {list(arch.channels)}")
    paths = _simulate_streams(recipe, sim, Path(data_dir) if data_dir is not None else out, progress)
    t_sim = time.time() - t_start
    # compact: one byte a pixel, so 4x longer streams fit (docs/emergence.md, fresh-data experiment)
    tr = load_dataset(paths["natural"], "train", response=recipe.response, compact=True)
    data = {"natural": tr}
    for name in recipe.streams:
        if name != "natural":
            data[name] = load_dataset(paths[name], "train", response=recipe.response, norm_stats=tr.stats,
                                      compact=True)
    wtr = data["whitenoise"]
    nv, wv = (int(len(d.stimulus) * recipe.val_share) for d in (tr, wtr))
    base_x = [tr.stimulus[:-nv], wtr.stimulus[:-wv]]
    base_y = [tr.rates[:-nv], wtr.rates[:-wv]]
    vsets = [(np.asarray(tr.stimulus[-nv:]), tr.rates[-nv:]), (np.asarray(wtr.stimulus[-wv:]), wtr.rates[-wv:])]
    ids = [f"{c.type}-{int(c.y)}-{int(c.x)}" for c in sim.cells]
    t0 = time.time()
    res, previous = None, None
    stages = recipe.stages[:max_stages] if max_stages else recipe.stages
    for i, stage in enumerate(stages):
        log.info("stage %d/%d: %s", i + 1, len(stages), stage.name)
        xs, ys = list(base_x), list(base_y)
        rest = 1 - sum(stage.shares.get(n, 0) for n in recipe.streams)   # summed in the streams' order
        shares = [rest * (1 - stage.noise_share), rest * stage.noise_share]
        losses = [float(stage.loss.get("natural", 1.0)), float(stage.loss.get("whitenoise", 1.0))]
        fweights = [None, None]
        valid: Any = list(vsets)
        for name, stream in recipe.streams.items():   # the extra streams in the recipe's order
            if name in BASE_STREAMS or stage.shares.get(name, 0) <= 0:
                continue
            d = data[name]
            x, y, ev = d.stimulus, d.rates, d.events
            if stream.validate_share > 0:   # held out, and validates this stage
                n = int(len(x) * stream.validate_share)
                valid.append((np.asarray(x[-n:]), y[-n:]))
                x, y = x[:-n], y[:-n]
            xs.append(x)
            ys.append(y)
            fweights.append(_event_weights(stream, ev, stage, len(x)))
            shares.append(stage.shares[name])
            losses.append(float(stage.loss.get(name, 1.0)))
        if stage.validation == "pooled":
            valid = (np.concatenate([v[0] for v in vsets]), np.concatenate([v[1] for v in vsets]))
        kw = {}
        if stage.patience is not None:
            kw["patience"] = stage.patience
        if stage.lr_patience is not None:
            kw["lr_patience"] = stage.lr_patience
        if stage.noise is not None:
            kw["noise"] = stage.noise
        cfg = TrainConfig(**recipe.model, epochs=stage.epochs, epoch_windows=stage.windows, lr=stage.lr,
                          seed=stage.seed + SEED_STRIDE * recipe.seed,
                          stream_weights=tuple(shares),
                          stream_loss_weights=None if all(v == 1.0 for v in losses) else tuple(losses),
                          freeze=stage.freeze, **kw)
        score = None
        if stage.select == "phenomena":
            score = assess.phenomena_score(sim, vsets[1] if stage.select_wn > 0 else None, stage.select_wn)
        ck = out / ("train.ckpt" if i == 0 else f"finetune{i}.ckpt")
        init_from: Any = previous if stage.init == "previous" else None
        if stage.init in PLANTED_INITS:   # in z-scored input units: the filter times the stimulus s.d.
            init_from = {"w1": (planted * tr.stats["std"]).astype(np.float32)}
            if cuts is not None:   # and batch norm that keeps the planted thresholds (freeze g1 and b1 too)
                half = PLANTED_BN_FRAMES // 2   # the first stage's mixture: natural movie and white noise
                sample = np.concatenate([np.asarray(tr.stimulus[:half]), np.asarray(wtr.stimulus[:half])])
                init_from.update(_threshold_norm(planted, cuts, tr.stats, sample, arch))
                if pm is not None:   # and layers 2-3 as the planted control has them
                    init_from.update(_planted_layers23(pm, norm, sample, tr.stats, arch.bn_eps))
        res = train(xs, ys, config=cfg, valid=valid, checkpoint=ck, norm_stats=tr.stats, cell_ids=ids,
                    init_from=init_from, progress=progress,
                    frame_weights=fweights if any(w is not None for w in fweights) else None, score=score)
        previous = ck
    t_train = time.time() - t0
    assert res is not None   # a recipe has at least one stage
    model = res.model
    model.metadata.update(recipe=recipe.text, recipe_name=recipe.name, git_commit=git_commit(),
                          retina_version=__version__, seed=recipe.seed, **simulator_metadata(sim))
    model.save(out / "model.h5")
    report = {"recipe": recipe.name, "train_seconds": t_train, "simulate_seconds": t_sim, "epochs": res.history,
              "best_epoch": res.best_epoch, "best_val_corr": res.best_val_corr}
    for name in recipe.streams:
        te = load_dataset(paths[name], "test", response="rate", norm_stats=tr.stats)
        corr, _ = evaluate(model, te.stimulus, te.true_rate)
        ceil = assess.noise_ceiling(te.repeats, te.true_rate)
        key = "test_natural" if name == "natural" else f"test_{name}"
        report[key] = {"corr_per_cell": corr.tolist(), "mean_corr": float(corr.mean()),
                       "single_repeat_ceiling_per_cell": ceil.tolist()}
    report["channels"] = classify_channels(model)
    report["phenomena"] = assess.phenomena_report(model, sim)
    report["directions"] = assess.directions(report["phenomena"])
    report["latency_variants"] = assess.latency_variants(model, sim)
    report["total_seconds"] = time.time() - t_start
    from ..io import atomic_text

    atomic_text(out / "report.json", json.dumps(report, indent=1, default=float))
    atomic_text(out / "report.md", assess.report_markdown(report, ids))
    return model, report


def seed_summary(report: dict) -> dict:
    """What one seed's ``report.json`` says of its fit: the held-out correlation per stream
    (``natural``, ``whitenoise``...), the validation correlation and loss at the chosen epoch."""
    fit = {k[5:]: float(v["mean_corr"]) for k, v in report.items() if k.startswith("test_") and isinstance(v, dict)}
    fit["validation"] = float(report.get("best_val_corr", np.nan))
    best = [e for e in report.get("epochs", []) if e.get("epoch") == report.get("best_epoch")]
    fit["validation_loss"] = float(best[0]["val_loss"]) if best else float("nan")
    return fit


def _run_seed(seed, recipe, out_dir, data_dir, max_stages):
    """On a worker (or here): one seed of a recipe in ``out_dir/seed<N>``; returns its fit summary (the model
    stays in its file)."""
    _, report = run(recipe, Path(out_dir) / f"seed{seed}", seed=seed, data_dir=data_dir, max_stages=max_stages)
    return seed_summary(report)


def run_seeds(recipe: Recipe | str | Path, out_dir: str | Path, seeds, *, client=None,
              data_dir: str | Path | None = None, progress: bool = False, max_stages: int | None = None) -> dict:
    """Run ``recipe`` once per seed: the ensemble of independent models a claim about emergence needs.

    Parameters
    ----------
    recipe : Recipe, str or Path
        As for :func:`run`.
    out_dir : str or Path
        Seed ``N`` goes to ``out_dir/seed<N>`` (``model.h5``, ``report.json``,
        checkpoints); an interrupted ensemble resumes each seed where it stopped.
    seeds : sequence of int
        Distinct non-negative seeds (each stage trains with its seed + 1000 x seed).
    client : dask.distributed.Client, optional
        Train the seeds in parallel, one task per seed.  The workers read the
        datasets from ``data_dir`` and write to ``out_dir``: on a cluster of
        several machines both must be on a shared file system.
    data_dir : str or Path, optional
        The simulated datasets, shared by every seed (default ``out_dir/data``).
        They are simulated here, once, before any seed starts.

    Returns
    -------
    dict
        Seed -> its fit (:func:`seed_summary`), in seed order.  The seed with
        the lowest validation loss is ``min(result, key=lambda s:
        result[s]["validation_loss"])``: the only model choice a recipe's
        ``select = "validation"`` allows.
    """
    from ..distributed import check_client, run_items
    from .ensemble import _check_seeds

    client = check_client(client)
    seeds = _check_seeds(seeds)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir)
    data_path = Path(data_dir) if data_dir is not None else out / "data"
    sim = _simulator(recipe)
    _simulate_streams(recipe, sim, data_path, progress)   # once, before the seeds share them
    results: dict[int, dict] = {}

    def done(seed, fit):
        results[seed] = fit
        log.info("seed %d: validation correlation %.3f, loss %.4f", seed, fit["validation"], fit["validation_loss"])

    if client is None:
        for s in seeds:
            log.info("seed %d of %s", s, list(seeds))
            done(s, _run_seed(s, recipe, out, data_path, max_stages))
    else:
        run_items(client, _run_seed, seeds, shared=(recipe, str(out), str(data_path), max_stages), on_result=done,
                  label=lambda s: f"seed {s}", desc="recipe seeds", unit="seed", progress=progress, max_batch=1)
    return {s: results[s] for s in seeds}
