"""The networks and the saved model: architectures (nnU-Net's ``PlainConvUNet`` presets, the
Merlin-family encoder), weight loading and losses, the model bundle (``model.pt``: networks, plan,
refiner, fallback chain; :func:`~.bundle.load_model`), the sliding window (:mod:`.infer`) and the
CTVn refiner (:mod:`.refine`).

Needs the ``model`` extra (torch, dynamic-network-architectures). Training them is :mod:`cervicontour.training`.

Example:
    >>> from cervicontour.networks import load_model    # doctest: +SKIP
    >>> model = load_model("default")                   # doctest: +SKIP
"""

from cervicontour.networks.bundle import Model, load_model, save_model

__all__ = ["Model", "load_model", "save_model"]
