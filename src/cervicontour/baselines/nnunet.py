"""nnU-Net v2 baseline: overlapping structures as nnU-Net regions — export and import.

Encoding: :mod:`.nnunet_encoding`; running nnU-Net end to end: :mod:`.nnunet_run`.

nnU-Net needs one integer label map per case, but our five structures overlap (Parametrium
touches Bladder, CTVp holds parts of others...). The export therefore gives every *combination*
of structures that occurs in the training cohort its own label value (1, 2, ... consecutive, as
nnU-Net requires), and declares one nnU-Net *region* per structure: the list of label values whose
combination contains it (nnU-Net ``documentation/region_based_training.md``). nnU-Net then trains
one sigmoid per structure, so a voxel may belong to several predicted structures.

The encoding is stored in ``dataset.json`` under :data:`ENCODING_KEY`::

    "labels": {"background": 0, "Bladder": [1, 6], "Parametrium": [5, 6], ...},
    "regions_class_order": [1, 2, 3, 4, 5],
    "cervicontour_encoding": {"structures": [...], "label_values": {"1": ["Bladder"], ...,
                              "6": ["Bladder", "Parametrium"]}}

When no two structures overlap in the training cohort, ``labels`` are plain integers and no regions
are declared (nnU-Net then trains one softmax over the labels).

nnU-Net's own label-map output keeps one region per voxel (the last region in ``labels`` order
whose sigmoid is > 0.5, written as its ``regions_class_order`` value), so overlaps between
predictions are lost there; :func:`import_predictions` reads the ``--save_probabilities`` files
(``<case>.npz`` + ``<case>.pkl``) and thresholds each region's probability instead.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.baselines.nnunet_encoding import (
    ENCODING_KEY,
    RegionEncoding,
    bit_codes,
    label_dtype,
)
from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name
from cervicontour.volume import Volume

FILE_ENDING = ".nii.gz"
#: nnU-Net's threshold on region sigmoids (``LabelManager.convert_probabilities_to_segmentation``).
THRESHOLD = 0.5


# --------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportedDataset:
    """What :func:`export_dataset` wrote: one folder per nnU-Net dataset."""

    folder: Path
    dataset_id: int
    structures: tuple[str, ...]
    training: tuple[str, ...]
    test: tuple[str, ...]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise InputError(f"dataset id must be 1..999 (nnU-Net's three digits), got {dataset_id}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"dataset name must be letters/digits (e.g. 'Cervix'), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def export_dataset(
    cohort,
    nnunet_raw: str | os.PathLike,
    *,
    dataset_id: int,
    name: str = "Cervix",
    structures: Sequence[str] = PRIMARY,
    test: Iterable | None = None,
    per_structure: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> list[ExportedDataset]:
    """Write an nnU-Net v2 raw dataset (``imagesTr``, ``labelsTr``, ``imagesTs``, ``dataset.json``).

    Args:
        cohort: a :class:`~cervicontour.cohort.Cohort` or its folder; its labelled patients
            are the training cases, its hold-out patients go to ``imagesTs``.
        nnunet_raw: the ``nnUNet_raw`` folder; ``Dataset{id:03d}_{name}`` is created inside.
        dataset_id: nnU-Net dataset id (1..999). With ``per_structure``, ids ``dataset_id + i``.
        name: dataset name (letters/digits).
        structures: the structures to export (vocabulary names), region order.
        test: cases (``Case`` objects) for ``imagesTs`` instead of the cohort's hold-out ones.
        per_structure: one binary dataset per structure (``{name}{Structure}``) instead of one
            region-based dataset.
        on_case: called with each patient id once its files are written.

    Images are copied through SimpleITK with their exact spacing/origin/direction (``_0000``);
    label maps get the image's geometry. Case identifiers are the patient ids.

    Returns:
        One :class:`ExportedDataset` (or one per structure).

    Raises:
        InputError: no labelled patient, a training patient lacks a structure, a mask is not on
            its image grid, or the dataset folder already holds a dataset.json.
    """
    from cervicontour.cohort import Cohort, load_cohort

    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    structures = tuple(dict.fromkeys(canonical_name(s) for s in structures))
    training = cohort.labelled()
    test_cases = list(cohort.holdout() if test is None else test)
    if not training:
        raise InputError(f"{cohort.root}: no labelled patients; expected at least one with structures/<Name>.nii.gz")
    for case in training:
        missing = [s for s in structures if not case.has(s)]
        if missing:
            raise InputError(
                f"patient {case.patient_id!r} lacks {missing}: expected every training patient to have "
                f"{list(structures)}; pass --structures with the ones all patients have, or remove the patient"
            )
    groups = [(dataset_id + i, f"{name}{s}", (s,)) for i, s in enumerate(structures)] if per_structure else [(dataset_id, name, structures)]
    folders = []
    for group_id, group_name, group_structures in groups:
        folder = Path(nnunet_raw) / dataset_folder_name(group_id, group_name)
        if (folder / "dataset.json").exists():
            raise InputError(f"{folder}/dataset.json exists: expected a new dataset folder; remove it or pick another --dataset-id")
        folders.append(folder)
    outputs = [_DatasetWriter(folder, group_structures) for folder, (_, _, group_structures) in zip(folders, groups)]
    for case in training:
        image = _read_sitk_image(case)
        masks = {s: case.load_structure(s) for s in structures}
        for writer in outputs:
            writer.add_training(case.patient_id, image, masks)
        if on_case:
            on_case(case.patient_id)
    for case in test_cases:
        image = _read_sitk_image(case)
        for writer in outputs:
            writer.add_test(case.patient_id, image)
        if on_case:
            on_case(case.patient_id)
    return [writer.finish(group_id, group_name) for writer, (group_id, group_name, _) in zip(outputs, groups)]


def _read_sitk_image(case):
    """The case's CT as a SimpleITK image, read from the file itself (exact header geometry)."""
    import SimpleITK as sitk

    from cervicontour.io import is_nifti, volume_to_image

    if case.image_path is not None and case.image_path.is_file() and is_nifti(case.image_path):
        return sitk.ReadImage(str(case.image_path))
    return volume_to_image(case.load_image())  # DICOM folder: through our reader


class _DatasetWriter:
    """Writes one dataset: images and bit-code label maps, then remaps codes to label values."""

    def __init__(self, folder: Path, structures: tuple[str, ...]) -> None:
        self.folder, self.structures = folder, structures
        self.codes: set[int] = set()
        self.training: list[str] = []
        self.test: list[str] = []

    def add_training(self, pid: str, image, masks: Mapping[str, Volume]) -> None:
        import SimpleITK as sitk

        from cervicontour.io.nifti import _to_zyx, image_to_volume

        grid = image_to_volume(image)
        for s in self.structures:
            if not grid.same_grid(masks[s]):
                raise InputError(
                    f"patient {pid!r}: mask {s!r} is not on the image grid "
                    f"({'; '.join(grid.grid_differences(masks[s]))}); run `cervicontour clean`"
                )
        codes = bit_codes([masks[s].array for s in self.structures])
        self.codes |= set(np.unique(codes).tolist())
        label = sitk.GetImageFromArray(_to_zyx(codes))
        label.CopyInformation(image)
        _write_sitk(image, self.folder / "imagesTr" / f"{pid}_0000{FILE_ENDING}")
        _write_sitk(label, self.folder / ".codes" / f"{pid}{FILE_ENDING}")
        self.training.append(pid)

    def add_test(self, pid: str, image) -> None:
        _write_sitk(image, self.folder / "imagesTs" / f"{pid}_0000{FILE_ENDING}")
        self.test.append(pid)

    def finish(self, dataset_id: int, name: str) -> ExportedDataset:
        import SimpleITK as sitk

        encoding = RegionEncoding.from_bits(self.structures, self.codes)
        lut = encoding.lookup().astype(label_dtype(encoding.num_labels))
        staging = self.folder / ".codes"
        for pid in self.training:
            codes = sitk.ReadImage(str(staging / f"{pid}{FILE_ENDING}"))
            label = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(codes)])
            label.CopyInformation(codes)
            _write_sitk(label, self.folder / "labelsTr" / f"{pid}{FILE_ENDING}")
            (staging / f"{pid}{FILE_ENDING}").unlink()
        staging.rmdir()
        from cervicontour.io import write_text_atomic

        write_text_atomic(self.folder / "dataset.json", json.dumps(dataset_json(encoding, len(self.training), name), indent=2))
        return ExportedDataset(self.folder, dataset_id, self.structures, tuple(self.training), tuple(self.test))


def _write_sitk(image, path: Path) -> None:
    import SimpleITK as sitk

    from cervicontour.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def dataset_json(encoding: RegionEncoding, num_training: int, name: str) -> dict:
    """nnU-Net v2 dataset.json for a region-encoded dataset (see the module docstring)."""
    order = encoding.regions_class_order()  # also checks that every structure occurs
    return {
        "channel_names": {"0": "CT"},
        "labels": encoding.labels(),
        **({"regions_class_order": order} if encoding.is_region_based else {}),
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        # pins nnU-Net's reader: arrays (z, y, x), geometry kept in the .pkl's sitk_stuff
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": name,
        "description": "cervicontour export: one region per structure; label values encode combinations of structures",
        ENCODING_KEY: encoding.to_json(),
    }


# --------------------------------------------------------------------------- import
def import_predictions(
    pred_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset_json: str | os.PathLike | Mapping,
    reference: str | os.PathLike | None = None,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Path]]:
    """nnU-Net predictions → ``OUT/<case>/structures/<Name>.nii.gz`` (binary, input grid).

    Args:
        pred_dir: nnU-Net's output folder: ``<case>.nii.gz`` and, with ``--save_probabilities``,
            ``<case>.npz`` (``probabilities``: (channels, z, y, x)) + ``<case>.pkl``. The pickle is
            nnU-Net's own output; only import folders you trust.
        out: cohort folder to write (created).
        dataset_json: the dataset's dataset.json (path or dict).
        reference: the cohort (folder, Cohort or ``{case: Case}``) or one CT file the predictions were made for;
            each output is checked against the case's grid and written with its exact geometry.

    From probabilities, each region sigmoid > 0.5 gives its structure (overlaps survive); a
    non-region dataset (no overlaps in training) takes the argmax label. From a label map, the
    values are decoded as combinations; a map whose values are all ``regions_class_order``
    values (nnU-Net's own export of a region model) is decoded through that order with a
    warning, since nnU-Net kept only one region per voxel.

    Returns:
        ``{case: {structure: path}}``.

    Raises:
        InputError: no predictions found, channel count or grid mismatch with the dataset/reference.
    """
    from cervicontour.cohort import write_case

    pred_dir = Path(pred_dir)
    meta = json.loads(Path(dataset_json).read_text()) if not isinstance(dataset_json, Mapping) else dict(dataset_json)
    encoding = RegionEncoding.from_dataset_json(meta)
    ending = meta.get("file_ending", FILE_ENDING)
    cases = sorted({p.name[: -len(ending)] for p in pred_dir.glob(f"*{ending}")} | {p.stem for p in pred_dir.glob("*.npz")})
    if not cases:
        raise InputError(f"{pred_dir}: no predictions; expected nnU-Net outputs <case>{ending} and/or <case>.npz + <case>.pkl")
    references = _references(reference, cases)
    written = {}
    for case in cases:
        npz, pkl = pred_dir / f"{case}.npz", pred_dir / f"{case}.pkl"
        if npz.is_file() and pkl.is_file():
            masks, grid = _from_probabilities(npz, pkl, encoding)
        else:
            masks, grid = _from_label_map(pred_dir / f"{case}{ending}", encoding, meta)
        ref = references.get(case)
        if ref is not None:
            if not ref.same_grid(grid):
                raise InputError(
                    f"prediction {case!r} is not on the grid of its reference CT "
                    f"({'; '.join(ref.grid_differences(grid))}): expected the CT the predictions were made from"
                )
            grid = ref
        volumes = {s: grid.with_array(m.astype(np.uint8)) for s, m in masks.items()}
        folder = write_case(out, case, None, volumes)
        written[case] = {s: folder / "structures" / f"{s}.nii.gz" for s in volumes}
        if on_case:
            on_case(case)
    return written


def _references(reference, cases: list[str]) -> dict[str, Volume]:
    """Case id → its reference CT; ``reference`` is a CT file, a cohort folder or ``{id: Case}``."""
    if reference is None:
        return {}
    from cervicontour.cohort import load_cohort
    from cervicontour.io import is_nifti, read_volume

    if not isinstance(reference, Mapping) and Path(reference).is_file() and is_nifti(reference):
        if len(cases) != 1:
            raise InputError(f"--reference is one CT ({reference}) but {len(cases)} cases were predicted: pass the cohort folder")
        return {cases[0]: read_volume(reference)}
    cohort = reference if isinstance(reference, Mapping) else load_cohort(reference)
    missing = [c for c in cases if c not in cohort]
    if missing:
        where = getattr(cohort, "root", "the reference cases")
        raise InputError(f"predictions {missing} have no patient in {where}: expected the cohort they were predicted from")
    return {c: cohort[c].load_image() for c in cases}


def _grid_from_properties(properties: Mapping, shape_zyx: tuple[int, ...]) -> Volume:
    sitk_stuff = properties["sitk_stuff"]
    direction = np.asarray(sitk_stuff["direction"], float).reshape(3, 3)
    return Volume(np.zeros(shape_zyx[::-1], np.uint8), sitk_stuff["spacing"], sitk_stuff["origin"], direction)


def _from_probabilities(npz: Path, pkl: Path, encoding: RegionEncoding) -> tuple[dict[str, np.ndarray], Volume]:
    with np.load(npz) as data:
        probabilities = data["probabilities"]  # (channels, z, y, x): nnU-Net's SimpleITK order
    with pkl.open("rb") as handle:
        properties = pickle.load(handle)
    grid = _grid_from_properties(properties, probabilities.shape[1:])
    region_based = encoding.is_region_based
    expected = len(encoding.structures) if region_based else encoding.num_labels + 1
    if probabilities.ndim != 4 or probabilities.shape[0] != expected:
        raise InputError(
            f"{npz}: probabilities have shape {probabilities.shape}; expected ({expected}, z, y, x) for this "
            f"dataset.json ({'one sigmoid per region' if region_based else 'background + one softmax per label'})"
        )
    ijk = probabilities.transpose(0, 3, 2, 1)
    if region_based:
        return {s: ijk[i] > THRESHOLD for i, s in enumerate(encoding.structures)}, grid
    return encoding.decode(ijk.argmax(0)), grid


def _from_label_map(path: Path, encoding: RegionEncoding, meta: Mapping) -> tuple[dict[str, np.ndarray], Volume]:
    from cervicontour.io import read_nifti

    label_map = read_nifti(path)
    values = set(np.unique(label_map.array).tolist()) - {0}
    order = meta.get("regions_class_order")
    if encoding.is_region_based and order and values <= set(order):
        warnings.warn(
            f"{path.name}: importing nnU-Net's label map of a region model: it keeps one structure per voxel, "
            "so overlaps between predicted structures are lost; predict with --save_probabilities to keep them",
            stacklevel=3,
        )
        masks = {s: np.isin(label_map.array, [order[i]]) for i, s in enumerate(encoding.structures)}
        return masks, label_map
    return encoding.decode(label_map.array), label_map
