"""The segmentation model: per-structure sigmoid 3D U-Net, training, transfer learning, inference.

Needs the ``model`` extra (torch, dynamic-network-architectures, monai). Nothing here is imported
by the low floors (volume, io, metrics, rules).

Example:
    >>> from cervicontour.model import TrainConfig, train, load_model   # doctest: +SKIP
    >>> train("out/cohort", "out/run", TrainConfig(steps=500))         # doctest: +SKIP
    >>> model = load_model("out/run")                                  # doctest: +SKIP
"""

from cervicontour.model.bundle import Model, load_model, save_model
from cervicontour.model.config import Augmentation, TrainConfig, load_config, to_toml
from cervicontour.model.train import TrainResult, train

__all__ = ["Augmentation", "Model", "TrainConfig", "TrainResult", "load_config", "load_model", "save_model", "to_toml", "train"]
