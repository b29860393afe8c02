"""Training a retina CNN without a framework: hand-written gradients, Adam, batch norm, checkpoints.

=====================  ===================================================================
:mod:`.config`         :class:`TrainConfig` (every setting) and :class:`TrainResult`
:mod:`.loss`           the training network's forward pass, Poisson loss and gradients;
                       :func:`init_params`, :func:`to_model` (batch norm folded), :func:`evaluate`
:mod:`.optim`          :class:`Adam`
:mod:`.sampling`       the data checked, mini-batches of runs drawn from the streams
:mod:`.schedule`       best epoch, plateau learning-rate decay, early stopping
:mod:`.checkpoint`     resuming a run, starting from another run
:mod:`.loop`           :func:`train`, composing the above
:mod:`.ensemble`       :func:`train_ensemble`: one model per seed, in this process or on a Dask cluster
=====================  ===================================================================

The gradients use the same kernel module as the forward pass and attribution,
on the CPU or the GPU, and are checked against finite differences in the tests.
"""

from .config import LAYERS, PARAMS, RUNNING, TrainConfig, TrainResult
from .ensemble import train_ensemble
from .loop import train
from .loss import evaluate, init_params, loss_and_grads, pairs, to_model
from .optim import Adam

__all__ = ["TrainConfig", "TrainResult", "train", "train_ensemble", "init_params", "loss_and_grads", "to_model",
           "pairs", "evaluate", "Adam", "PARAMS", "RUNNING", "LAYERS"]
