"""Every file the package reads or writes, through one package; ``docs/formats.md`` documents each layout.

=====================  ====================================  ==================================
format attribute       written by                            module
=====================  ====================================  ==================================
``retina-model``       :func:`save_model`                    :mod:`retina.io.model`
``retina-stimulus``    :func:`save_stimulus`                 :mod:`retina.io.stimulus`
``retina-rates``       :func:`save_rates` (``retina predict``)  :mod:`retina.io.results`
``retina-attribution`` :func:`save_attribution`              :mod:`retina.io.results`
``retina-explain``     :func:`save_explain` (``results.h5``)  :mod:`retina.io.results`
``retina-sweep``       :func:`retina.sweep.sweep`            :mod:`retina.io.results`
``retina-checkpoint``  :func:`save_checkpoint`               :mod:`retina.io.checkpoint`
``deep-retina``        :func:`retina.datasets.simulate_dataset`  :mod:`retina.io.dataset`
=====================  ====================================  ==================================

Every write is atomic (:func:`atomic_h5`, :func:`atomic_text`); long runs
write one resumable partial file (:func:`open_partial`, :func:`finish_partial`).
No pickled objects are ever read or written.
"""

from . import checkpoint, dataset, model, results, stimulus
from ._files import (
    atomic_h5,
    atomic_text,
    close_partial,
    finish_partial,
    open_h5,
    open_partial,
    partial_path,
    readable,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import load_dataset
from .model import BUNDLED_MODELS, SCHEMA_VERSION, bundled_path, load_model, save_model
from .results import save_attribution, save_explain, save_rates
from .stimulus import load_stimulus, read_stimulus, save_stimulus

__all__ = ["FORMATS", "SCHEMA_VERSION", "atomic_h5", "atomic_text", "open_h5", "open_partial", "finish_partial",
           "close_partial", "readable", "partial_path", "load_model", "save_model", "bundled_path",
           "BUNDLED_MODELS", "load_stimulus",
           "read_stimulus", "save_stimulus", "save_rates", "save_attribution", "save_explain", "save_checkpoint",
           "load_checkpoint", "load_dataset", "model_hash"]

FORMATS = {
    model.MODEL_FORMAT: model.SCHEMA_VERSION,
    stimulus.STIMULUS_FORMAT: stimulus.SCHEMA_VERSION,
    **results.SCHEMA_VERSIONS,
    checkpoint.CHECKPOINT_FORMAT: checkpoint.SCHEMA_VERSION,
    dataset.DATASET_FORMAT: dataset.SCHEMA_VERSION,
}
"""Each format this package writes and the schema version it writes it in."""


def model_hash(model):
    """SHA-256 over a model's architecture and arrays (:func:`retina.model.content_hash`)."""
    from ..model import content_hash

    return content_hash(model)
