"""Models from other toolkits: torch-deep-retina checkpoints and deep-retina Keras HDF5 weights.

:func:`import_model` recognises the file and returns a :class:`retina.RetinaCNN`
whose predictions equal the original network's in evaluation mode (noise
off, batch norm with its running statistics), with the source recorded in
``metadata`` (format, model type, dataset, stimulus type, cells) and the
stimulus normalisation in ``norm_stats``.

torch-deep-retina (``torch.save`` dicts with ``model_type``,
``model_state_dict``, ``hyps``/``model_hyps``, ``norm_stats``), read by
:mod:`retina.io.torch_pickle` without torch and without executing anything:

* ``BNCNN``: conv -> BatchNorm1d over units -> ReLU, twice; linear without
  bias -> BatchNorm1d -> softplus.  Each batch norm (eps 1e-3) is folded into
  a per-unit scale and shift; the convolution biases go into the shifts.
* ``LinearStackedBNCNN``: each layer's convolution is a stack of 3x3
  convolutions with batch-norm affines between them (``AbsBatchNorm2d``:
  scale ``|scale|``, eps 1e-5) and no nonlinearity; the stack is composed
  into one 15x15 (and one 11x11) kernel exactly, in float64.  The outer batch
  norms are ``AbsBatchNorm1d`` (``scale``/``shift`` keys, ``|scale|``, eps 1e-3).

Any other ``model_type`` (recurrent models, models with an exponential
output, openretina's core-readout models) is refused by name: this
architecture cannot represent it.

deep-retina Keras (``model.save_weights`` or ``model.save`` HDF5 of the
BN-CNN: Conv2D, BatchNormalization over units, Conv2D, BatchNormalization,
Dense without bias, BatchNormalization, softplus; ``channels_first``), read
with h5py: ``kernel:0`` is ``(kh, kw, in, out)``, batch norm ``gamma``,
``beta``, ``moving_mean``, ``moving_variance`` (eps 1e-3), the flatten order
``(c, y, x)``.  Both toolkits stack the window's frames as input channels
oldest first (channel ``history - 1`` is the newest frame), as
:class:`retina.RetinaCNN` does; a file whose temporal kernels peak at the
oldest frames gets a warning (pass ``frame_order="newest-first"`` if its
windows were stacked the other way).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
from scipy.signal import convolve2d

from ..model import RetinaCNN
from .torch_pickle import Inert, read_torch_checkpoint

__all__ = ["import_model", "detect_format", "IMPORT_FORMATS", "MODEL_TYPES"]

log = logging.getLogger("retina.io")

IMPORT_FORMATS = ("retina", "torch-deep-retina", "deep-retina-keras")
MODEL_TYPES = ("BNCNN", "LinearStackedBNCNN")
"""The torch-deep-retina model types this architecture represents exactly."""

BN_EPS = 1e-3          # BatchNorm1d / AbsBatchNorm1d of the published models, Keras' default
STACK_BN_EPS = 1e-5    # AbsBatchNorm2d between stacked convolutions (its class default)


def detect_format(path) -> str:
    """``"retina"``, ``"deep-retina-keras"`` (HDF5) or ``"torch-deep-retina"`` (zip or legacy pickle stream)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {str(p)!r}")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        import h5py

        try:
            with h5py.File(p, "r") as f:
                fmt = f.attrs.get("format")
                fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
                if fmt == "retina-model":
                    return "retina"
                if "layer_names" in f.attrs or ("model_weights" in f and "layer_names" in f["model_weights"].attrs):
                    return "deep-retina-keras"
        except OSError as exc:
            raise ValueError(f"{str(p)!r} is not a readable HDF5 file ({exc})") from None
        raise ValueError(f"{str(p)!r} is an HDF5 file but neither a retina model (attribute format="
                         "'retina-model') nor Keras weights (attribute layer_names)")
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch-deep-retina"
    raise ValueError(f"{str(p)!r} is not a model file this package reads: not HDF5 (a retina model or deep-retina "
                     "Keras weights) and not a torch checkpoint")


def import_model(path, *, format: str | None = None, frame_order: str = "oldest-first") -> RetinaCNN:
    """Read a torch-deep-retina checkpoint or deep-retina Keras weights as a :class:`RetinaCNN`.

    Parameters
    ----------
    path : str or Path
    format : {None, "torch-deep-retina", "deep-retina-keras", "retina"}
        Default: recognised from the file's first bytes.
    frame_order : {"oldest-first", "newest-first"}
        How the source stacked a window's frames as input channels (both
        toolkits: oldest first).

    Returns
    -------
    RetinaCNN
        With ``norm_stats`` from the checkpoint (Keras files carry none: the
        identity, and ``metadata["norm_stats"]`` says so) and the source in
        ``metadata``.
    """
    if frame_order not in ("oldest-first", "newest-first"):
        raise ValueError(f"frame_order must be 'oldest-first' or 'newest-first', got {frame_order!r}")
    fmt = detect_format(path) if format is None else format
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"format must be one of {IMPORT_FORMATS} or None, got {format!r}")
    if fmt == "retina":
        from .model import load_model

        return load_model(path)
    model = _from_torch(path) if fmt == "torch-deep-retina" else _from_keras(path)
    if frame_order == "newest-first":
        model.w1 = np.ascontiguousarray(model.w1[:, ::-1])
    _check_frame_order(model, path)
    model.metadata.update(imported_from=os.path.abspath(path), frame_order=frame_order)
    return model


# ----------------------------------------------------------------- torch-deep-retina
def _key(sd, *names):
    for n in names:
        if n in sd:
            return sd[n]
    return None


def _arr(value, what, path):
    if isinstance(value, Inert) or not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: {what} is not an array in this checkpoint ({type(value).__name__})")
    if value.dtype.kind not in "fiu":
        raise ValueError(f"{path}: {what} has dtype {value.dtype}, expected a number type")
    out = np.asarray(value, np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{path}: {what} holds non-finite values")
    return out


def _modules(sd, prefix):
    """``{index: {param: array}}`` of the ``prefix.<index>.<param>`` entries of a state dict, in index order."""
    mods: dict[int, dict] = {}
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.(.+)$")
    for k, v in sd.items():
        m = pat.match(str(k))
        if m:
            mods.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return dict(sorted(mods.items()))


def _bn_affine(mod, what, path, *, eps, absolute):
    """A batch norm in evaluation mode as ``(scale, shift)``: ``scale * v + shift``."""
    gamma = _key(mod, "scale", "weight")
    beta = _key(mod, "shift", "bias")
    mean, var = _key(mod, "running_mean"), _key(mod, "running_var")
    if gamma is None or beta is None or mean is None or var is None:
        raise ValueError(f"{path}: {what} lacks its scale/shift or running statistics")
    g, b = _arr(gamma, f"{what} scale", path), _arr(beta, f"{what} shift", path)
    mu, v = _arr(mean, f"{what} running_mean", path), _arr(var, f"{what} running_var", path)
    if np.any(v < 0):
        raise ValueError(f"{path}: {what} has a negative running variance")
    if absolute:
        g = np.abs(g)
    s = g / np.sqrt(v + eps)
    return s, b - s * mu


def _compose_stack(mod, what, path):
    """A LinearStackedConv2d's ``convs.*`` entries as one kernel ``(out, in, k, k)`` and bias ``(out,)``."""
    steps = _modules(mod, "convs")
    if not steps:
        raise ValueError(f"{path}: {what} has no stacked convolutions")
    kernel = bias = None
    for j, step in steps.items():
        if "weight" in step and np.ndim(step["weight"]) == 4:
            w = _arr(step["weight"], f"{what} convs.{j}.weight", path)
            b = _arr(step["bias"], f"{what} convs.{j}.bias", path) if "bias" in step else np.zeros(w.shape[0])
            if kernel is None:
                kernel, bias = w, b
                continue
            if w.shape[1] != kernel.shape[0]:
                raise ValueError(f"{path}: {what} convs.{j} takes {w.shape[1]} channels, the stack gives "
                                 f"{kernel.shape[0]}")
            co, ci = w.shape[0], kernel.shape[1]
            kh = kernel.shape[2] + w.shape[2] - 1
            kw = kernel.shape[3] + w.shape[3] - 1
            new = np.zeros((co, ci, kh, kw))
            for o in range(co):
                for i in range(ci):
                    acc = np.zeros((kh, kw))
                    for m in range(w.shape[1]):
                        acc += convolve2d(w[o, m], kernel[m, i], mode="full")
                    new[o, i] = acc
            bias = w.sum(axis=(2, 3)) @ bias + b
            kernel = new
        elif "running_mean" in step:
            if kernel is None:
                raise ValueError(f"{path}: {what} starts with a batch norm, not a convolution")
            s, t = _bn_affine(step, f"{what} convs.{j}", path, eps=STACK_BN_EPS, absolute=True)
            if s.shape != (kernel.shape[0],):
                raise ValueError(f"{path}: {what} convs.{j} normalises {s.shape[0]} channels, the stack has "
                                 f"{kernel.shape[0]}")
            kernel = kernel * s[:, None, None, None]
            bias = s * bias + t
        elif step:
            raise ValueError(f"{path}: {what} convs.{j} has parameters {sorted(step)} this importer does not know")
    return kernel, bias


def _hyps(ck):
    for k in ("hyps", "model_hyps"):
        if isinstance(ck.get(k), dict):
            return ck[k]
    return {}


def _plain(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _from_torch(path) -> RetinaCNN:
    ck, unknown = read_torch_checkpoint(path)
    if not isinstance(ck, dict):
        extra = f"; it names globals outside the allow-list: {', '.join(unknown)}" if unknown else ""
        raise ValueError(f"{path}: a torch checkpoint must hold a dict with model_type and model_state_dict, got "
                         f"{type(ck).__name__}{extra} (nothing it names was imported or run)")
    if unknown:
        raise ValueError(f"{path}: refused: its pickle names globals outside the allow-list ({', '.join(unknown)}); "
                         "nothing it names was imported or run")
    model_type = ck.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{path}: model_type {model_type!r} cannot be represented by this architecture; "
                         f"importable types are {MODEL_TYPES}")
    sd = ck.get("model_state_dict")
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{path}: the checkpoint has no model_state_dict")
    hyps = _hyps(ck)
    if hyps.get("softplus", True) is False or hyps.get("inference_exp", False) or hyps.get("infr_exp", False):
        raise ValueError(f"{path}: the model's output nonlinearity is an exponential (softplus=False or "
                         "inference_exp=True); this architecture has a softplus output")
    mods = _modules(sd, "sequential")
    convs, bns, lins = [], [], []
    for idx, mod in mods.items():
        if "convs.0.weight" in mod or any(k.startswith("convs.") for k in mod):
            convs.append((idx, mod, "stack"))
        elif "weight" in mod and np.ndim(mod["weight"]) == 4:
            convs.append((idx, mod, "conv"))
        elif "running_mean" in mod:
            bns.append((idx, mod))
        elif "weight" in mod and np.ndim(mod["weight"]) == 2:
            lins.append((idx, mod))
    if len(convs) != 2 or len(bns) != 3 or len(lins) != 1:
        raise ValueError(f"{path}: expected a {model_type} state dict with 2 convolutions, 3 batch norms and 1 "
                         f"linear layer under 'sequential.*', found {len(convs)}, {len(bns)} and {len(lins)}")
    absolute = model_type == "LinearStackedBNCNN"
    kernels = []
    for idx, mod, kind in convs:
        if kind == "stack":
            k, b = _compose_stack(mod, f"sequential.{idx}", path)
        else:
            k = _arr(mod["weight"], f"sequential.{idx}.weight", path)
            b = _arr(mod["bias"], f"sequential.{idx}.bias", path) if "bias" in mod else np.zeros(k.shape[0])
        kernels.append((k, b))
    (w1, b1), (w2, b2) = kernels
    lin_idx, lin = lins[0]
    w3 = _arr(lin["weight"], f"sequential.{lin_idx}.weight", path)
    b3 = _arr(lin["bias"], f"sequential.{lin_idx}.bias", path) if "bias" in lin else np.zeros(w3.shape[0])
    affines = [_bn_affine(mod, f"sequential.{idx}", path, eps=BN_EPS, absolute=absolute) for idx, mod in bns]
    meta = dict(source_format="torch-deep-retina", model_type=model_type)
    for k in ("dataset", "stim_type", "cells", "img_shape", "chans", "ksizes"):
        if k in hyps or k in ck:
            meta[k] = json.dumps(_plain(hyps.get(k, ck.get(k))))
    for k in ("epoch", "val_acc", "test_pearson"):
        if k in ck and np.isscalar(ck[k]):
            meta[k] = _plain(ck[k])
    img_shape = hyps.get("img_shape")
    frame = tuple(int(v) for v in img_shape[1:]) if isinstance(img_shape, (list, tuple)) and len(img_shape) == 3 \
        else None
    cells = hyps.get("cells")
    ids = [str(_plain(c)) for c in cells] if isinstance(cells, (list, tuple)) and len(cells) == w3.shape[0] \
        else None
    return _assemble(path, w1, b1, affines[0], w2, b2, affines[1], w3, b3, affines[2], frame,
                     _norm_stats(ck.get("norm_stats"), path), ids, meta)


def _norm_stats(ns, path):
    if ns is None:
        return None
    if isinstance(ns, dict):
        mean, std = ns.get("mean"), ns.get("std")
    elif isinstance(ns, (list, tuple)) and len(ns) == 2:
        mean, std = ns
    else:
        raise ValueError(f"{path}: norm_stats must be a dict of mean and std or a pair, got {type(ns).__name__}")
    try:
        mean_f, std_f = float(np.asarray(mean).mean()), float(np.asarray(std).mean())
    except (TypeError, ValueError):
        raise ValueError(f"{path}: norm_stats mean/std are not numbers") from None
    if np.asarray(mean).size != 1 or np.asarray(std).size != 1:
        raise ValueError(f"{path}: per-pixel norm_stats are not supported (a single mean and std are)")
    return {"mean": mean_f, "std": std_f}


def _assemble(path, w1, b1, bn1, w2, b2, bn2, w3, b3, bn3, frame, norm, ids, meta) -> RetinaCNN:
    """Fold each layer's bias and batch norm into the inference model's per-unit scale and shift."""
    c1, hist, k1, _ = w1.shape
    c2, c1b, k2, _ = w2.shape
    if c1b != c1:
        raise ValueError(f"{path}: the second convolution takes {c1b} channels, the first gives {c1}")
    (s1, t1), (s2, t2), (s3, t3) = bn1, bn2, bn3
    if frame is None:
        side = int(round(np.sqrt(s1.size / c1))) + k1 - 1
        frame = (side, side)
    h1, wd1 = frame[0] - k1 + 1, frame[1] - k1 + 1
    h2, wd2 = h1 - k2 + 1, wd1 - k2 + 1
    for name, s, n in (("first", s1, c1 * h1 * wd1), ("second", s2, c2 * h2 * wd2), ("output", s3, w3.shape[0])):
        if s.size != n:
            raise ValueError(f"{path}: the {name} batch norm has {s.size} units, the architecture needs {n} "
                             f"(frame {frame}, kernels {k1} and {k2})")
    if w3.shape[1] != c2 * h2 * wd2:
        raise ValueError(f"{path}: the readout takes {w3.shape[1]} inputs, layer 2 gives {c2 * h2 * wd2}")
    s1 = s1.reshape(c1, h1, wd1)
    s2 = s2.reshape(c2, h2, wd2)
    shift1 = t1.reshape(c1, h1, wd1) + s1 * b1[:, None, None]
    shift2 = t2.reshape(c2, h2, wd2) + s2 * b2[:, None, None]
    shift3 = t3 + s3 * b3
    try:   # both toolkits pair the window [i, i + history) with bin i + history; lab stimuli are raw intensities
        return RetinaCNN(w1, s1, shift1, w2, s2, shift2, w3, s3, shift3, frame_shape=frame, norm_stats=norm,
                         cell_ids=ids, metadata=meta, response_offset=1,
                         input_units="intensity" if norm is not None else "contrast")
    except ValueError as exc:
        raise ValueError(f"{path}: the imported arrays do not form a model: {exc}") from None


# ----------------------------------------------------------------- deep-retina Keras
def _from_keras(path) -> RetinaCNN:
    import h5py

    from ._files import open_h5

    with open_h5(path, "Keras weights") as f:
        root = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
        layers = []
        for name in names:
            if name not in root:
                raise ValueError(f"{path}: layer {name!r} is listed but has no group")
            g = root[name]
            wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
            if not wnames:
                continue
            weights = {}
            for wn in wnames:
                obj = g.get(wn)
                if not isinstance(obj, h5py.Dataset):
                    raise ValueError(f"{path}: weight {wn!r} of layer {name!r} is missing")
                short = wn.rsplit("/", 1)[-1]
                if short.endswith("_W") or short.endswith("_b") or "_W:" in short:
                    raise ValueError(f"{path}: layer {name!r} uses Keras 1 weight names ({short!r}); only Keras 2 "
                                     "files (kernel:0, gamma:0...) are read")
                weights[short.split(":")[0]] = np.asarray(obj[()], np.float64)
            layers.append((name, weights))
    convs = [(n, w) for n, w in layers if "kernel" in w and w["kernel"].ndim == 4]
    bns = [(n, w) for n, w in layers if "moving_mean" in w]
    dense = [(n, w) for n, w in layers if "kernel" in w and w["kernel"].ndim == 2]
    if len(convs) != 2 or len(bns) != 3 or len(dense) != 1 or len(layers) != 6:
        raise ValueError(f"{path}: expected the deep-retina BN-CNN (2 Conv2D, 3 BatchNormalization, 1 Dense), "
                         f"found layers {[n for n, _ in layers]}")

    def bn(name, w):
        for k in ("gamma", "beta", "moving_mean", "moving_variance"):
            if k not in w:
                raise ValueError(f"{path}: batch norm {name!r} lacks {k}")
        s = w["gamma"] / np.sqrt(w["moving_variance"] + BN_EPS)
        return s, w["beta"] - s * w["moving_mean"]

    (n1, cw1), (n2, cw2) = convs
    w1 = np.ascontiguousarray(cw1["kernel"].transpose(3, 2, 0, 1))
    w2 = np.ascontiguousarray(cw2["kernel"].transpose(3, 2, 0, 1))
    b1 = cw1.get("bias", np.zeros(w1.shape[0]))
    b2 = cw2.get("bias", np.zeros(w2.shape[0]))
    dn, dw = dense[0]
    w3 = np.ascontiguousarray(dw["kernel"].T)
    b3 = dw.get("bias", np.zeros(w3.shape[0]))
    affines = [bn(n, w) for n, w in bns]
    meta = dict(source_format="deep-retina-keras", model_type="BN-CNN", norm_stats="not stored in Keras weights: "
                "the identity (inputs must already be z-scored as in training)")
    return _assemble(path, w1, b1, affines[0], w2, b2, affines[1], w3, b3, affines[2], None, None, None, meta)


def _check_frame_order(model, path):
    """Warn when the temporal kernels weigh the oldest frames most (a window stacked newest-first?)."""
    energy = (model.w1.astype(np.float64) ** 2).sum(axis=(0, 2, 3))
    if energy.sum() <= 0 or model.history < 4:
        return
    centre = float((energy * np.arange(model.history)).sum() / energy.sum()) / (model.history - 1)
    if centre < 0.35:
        log.warning("%s: the layer-1 kernels weigh the oldest frames of the window most (energy centre at %.0f %% "
                    "of the window); if the source stacked frames newest-first, import with "
                    "frame_order='newest-first'", path, 100 * centre)
