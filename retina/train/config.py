"""Every setting of a training run, and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validate import check_int
from ..model import RetinaCNN

__all__ = ["TrainConfig", "TrainResult", "PARAMS", "RUNNING", "LAYERS"]

PARAMS = ("w1", "g1", "b1", "w2", "g2", "b2", "w3", "b3")
RUNNING = ("m1", "v1", "m2", "v2")
LAYERS = {"layer1": ("w1", "g1", "b1"), "layer2": ("w2", "g2", "b2"), "readout": ("w3", "b3")}


@dataclass
class TrainConfig:
    """Every setting of a training run (stored in checkpoints and model provenance)."""

    channels: tuple = (8, 8)
    kernel_sizes: tuple = (15, 11)
    history: int = 40
    epochs: int = 40
    epoch_windows: int = 30000
    batch: int = 500
    segments: int = 10
    """Runs of consecutive windows per batch (``batch / segments`` windows each)."""
    lr: float = 2e-3
    l2: float = 1e-3
    noise: float = 0.05
    bn_eps: float = 1e-3
    bn_momentum: float = 0.05
    val_fraction: float = 0.1
    lr_patience: int = 2
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    patience: int = 6
    seed: int = 0
    stream_weights: tuple | None = None
    """Share of the runs drawn from each training stream when ``train`` gets several movies
    (default: proportional to their lengths)."""
    stream_loss_weights: tuple | None = None
    """Weight of each stream's windows in the loss (default 1 each): white noise drives the
    rates far less than natural movies, so its errors need a larger weight to matter."""
    freeze: tuple = ()
    """Parameters left as they are (names of ``PARAMS``, or ``"layer1"``/``"layer2"``/``"readout"``
    for a layer's all), e.g. ``("layer1",)`` to fine-tune on new stimuli while keeping the first
    layer's filters, hence its channel types.  Batch-norm running statistics still follow the
    training data, so the folded ``scale``/``shift`` can change."""

    def validate(self):
        for name in ("history", "epochs", "epoch_windows", "batch", "segments", "lr_patience", "patience"):
            check_int(name, getattr(self, name), minimum=1)
        if self.batch % self.segments:
            raise ValueError(f"batch ({self.batch}) must be a multiple of segments ({self.segments})")
        for name, top in (("lr", 10.0), ("bn_eps", 1.0), ("min_lr", 10.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= top):
                raise ValueError(f"{name} must be in (0, {top:g}], got {v!r}")
        for name, top in (("l2", 1e3), ("noise", 1e3)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= top):
                raise ValueError(f"{name} must be in [0, {top:g}], got {v!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.lr_factor < 1 or not 0 < self.bn_momentum <= 1:
            raise ValueError("lr_factor must be in (0, 1) and bn_momentum in (0, 1]")
        frozen = []
        for name in ([self.freeze] if isinstance(self.freeze, str) else list(self.freeze)):
            if name not in PARAMS and name not in LAYERS:
                raise ValueError(f"freeze: unknown parameter {name!r}; expected names from {PARAMS} or {tuple(LAYERS)}")
            frozen += [k for k in LAYERS.get(name, (name,)) if k not in frozen]
        self.freeze = tuple(frozen)
        self.channels = tuple(int(c) for c in self.channels)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        if len(self.channels) != 2 or not all(1 <= c <= 1024 for c in self.channels):
            raise ValueError(f"channels must be two channel counts in 1..1024, got {self.channels}")
        if len(self.kernel_sizes) != 2 or not all(1 <= k <= 255 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be two kernel sizes in 1..255, got {self.kernel_sizes}")
        if not 1 <= self.history <= 10_000:
            raise ValueError(f"history must be in 1..10000 frames, got {self.history}")
        check_int("seed", self.seed, minimum=0)
        for name in ("stream_weights", "stream_loss_weights"):
            if getattr(self, name) is not None:
                sw = [float(v) for v in getattr(self, name)]
                if not sw or min(sw) < 0 or sum(sw) <= 0:
                    raise ValueError(f"{name} must be non-negative with a positive sum, got {getattr(self, name)!r}")
                setattr(self, name, sw)
        return self


@dataclass
class TrainResult:
    """The trained model (best validation epoch), the per-epoch log and where the run stopped."""

    model: RetinaCNN
    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_val_corr: float = float("nan")
    stopped: str = ""
    seconds: float = 0.0
    best_score: float = float("nan")
    """The ``score`` of the best epoch (its validation correlation when no ``score`` was given)."""
