"""A trained model on disk: ``model.pt`` = weights + architecture + plan + provenance.

``load_model("default")`` opens the packaged default model; a run directory or a ``.pt`` file
opens that model. Weights may be stored in float16 (the shipped model, to stay small) and are
always used in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.preprocess import Plan

FORMAT = "cervicontour-model/1"


@dataclass
class Model:
    """A network ready for inference, with everything needed to use and cite it.

    Attributes:
        network: the ``torch.nn.Module`` (float32, eval mode).
        plan: preprocessing plan (structures = output channels).
        arch: architecture description (nnU-Net plans style).
        name, version: e.g. ``"cervicontour-default"``, ``"0.1.0"``.
        config_sha256: hash of the training config that made it.
        meta: anything else recorded at training time (data, metrics, steps).
        path: where it was read from.
        refiner: an optional second stage for one structure
            (:class:`cervicontour.networks.refine.Refiner`), applied by ``predict``.
        fallback: an optional second :class:`Model` (e.g. the zero-shot init of a ``fit``) that
            predicts ``fallback_structures`` instead of this one, because it scored better on the
            fit's validation patients; it shares this model's working grid (same spacing and crop).
            A compound there (``CTVn``) means all its parts, and the fallback's refiner for it.
            The fallback may carry its own fallback (a chain, stored in the same file).
    """

    network: object
    plan: Plan
    arch: dict
    name: str
    version: str
    config_sha256: str
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    refiner: object | None = None
    fallback: "Model | None" = None
    fallback_structures: tuple[str, ...] = ()

    @property
    def structures(self) -> tuple[str, ...]:
        return self.plan.structures


def save_model(path, network, plan: Plan, arch: dict, *, name: str, version: str, config_sha256: str, meta: dict | None = None, half: bool = False, refiner=None,
               fallback: "Model | None" = None, fallback_structures=()) -> Path:
    """Write ``model.pt`` atomically. ``half=True`` stores float16 weights (half the size).
    ``refiner``: a trained :class:`cervicontour.networks.refine.Refiner` to ship inside the same file.
    ``fallback``/``fallback_structures``: see :class:`Model` (stored inside the same file)."""
    import torch

    payload = model_payload(network, plan, arch, name=name, version=version, config_sha256=config_sha256, meta=meta, half=half, refiner=refiner)
    _add_fallback(payload, fallback, fallback_structures, half=half)
    from cervicontour.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _add_fallback(payload: dict, fallback: "Model | None", structures, *, half: bool) -> dict:
    """Store ``fallback`` (for ``structures``) inside ``payload``, with its own fallback in turn: a
    chain (a model fitted from the shipped default keeps the default whole, and the default keeps
    its previous network)."""
    if fallback is not None and structures:
        theirs = model_payload(fallback.network, fallback.plan, fallback.arch, name=fallback.name, version=fallback.version,
                               config_sha256=fallback.config_sha256, meta=fallback.meta, half=half, refiner=fallback.refiner)  # fmt: skip
        payload["fallback"] = {"structures": list(structures), "model": _add_fallback(theirs, fallback.fallback, fallback.fallback_structures, half=half)}
    return payload


def model_payload(network, plan: Plan, arch: dict, *, name: str, version: str, config_sha256: str, meta: dict | None = None, half: bool = False, refiner=None) -> dict:
    """What ``model.pt`` holds for one network (see :func:`save_model`)."""
    from cervicontour.networks.network import storable_state

    state = storable_state(network, half=half)
    payload = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "config_sha256": config_sha256,
        "arch": arch,
        "plan": plan.to_dict(),
        "meta": meta or {},
        "state_dict": state,
    }
    if refiner is not None:
        payload["refiner"] = refiner.to_payload(half=half)
    return payload


def resolve_model_path(source: str | os.PathLike) -> Path:
    """``"default"`` → the packaged model; a run directory → its ``model.pt``; a file → itself."""
    if str(source) == "default":
        from cervicontour.models import default_model_path

        return default_model_path()
    path = Path(source)
    if path.is_dir():
        if (path / "model.pt").is_file():
            return path / "model.pt"
        raise InputError(f"{path}: no model.pt in this folder; expected a finished `cervicontour train` run directory")
    if path.is_file():
        return path
    raise InputError(f"{source}: no such model; pass 'default', a run directory or a model.pt file")


def read_payload(path: Path) -> dict:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{path}: cannot read the model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a cervicontour model (expected format {FORMAT!r})")
    return payload


def load_model(source: str | os.PathLike = "default", *, device: str = "cpu") -> Model:
    """Open a model for inference (float32, eval mode, on ``device``), with its refiner and fallback."""
    path = resolve_model_path(source)
    return _chain_from_payload(read_payload(path), path, device)


def _chain_from_payload(payload: dict, path: Path, device: str) -> Model:
    """One model of the file and, recursively, the fallback it carries."""
    model = _from_payload(payload, path, device)
    if payload.get("fallback"):
        model.fallback = _chain_from_payload(payload["fallback"]["model"], path, device)
        model.fallback_structures = tuple(payload["fallback"]["structures"])
        grid = lambda plan: (tuple(plan.spacing_mm), plan.body_threshold_hu, plan.margin_mm)  # noqa: E731 - what fixes the working grid
        if grid(model.fallback.plan) != grid(model.plan):
            raise InputError(f"{path}: its fallback model's working grid (spacing, body crop) {grid(model.fallback.plan)} differs from the model's {grid(model.plan)}; they must share one")
    return model


def _from_payload(payload: dict, path: Path, device: str) -> Model:
    from cervicontour.networks.network import build_network, load_state

    plan = Plan.from_dict(payload["plan"])
    # model.pt holds every weight: a pretrained encoder (Merlin) is not built, nor read from its package, again
    network = build_network(payload["arch"], 1, len(plan.structures), empty_encoder=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    load_state(network, state)
    network.to(device).eval()
    refiner = None
    if payload.get("refiner") is not None:
        from cervicontour.networks.refine import Refiner

        from cervicontour.structures import COMPOUND

        refiner = Refiner.from_payload(payload["refiner"], device=device)
        composed = any(part in plan.structures for part in COMPOUND.get(refiner.structure, ()))  # e.g. CTVn from the LN_* groups
        if refiner.structure not in plan.structures and not composed:
            raise InputError(f"{path}: its refiner refines {refiner.structure!r}, which the model does not predict ({', '.join(plan.structures)})")
    return Model(network, plan, payload["arch"], payload["name"], payload["version"], payload["config_sha256"], payload.get("meta", {}), path, refiner)
