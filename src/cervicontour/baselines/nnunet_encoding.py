"""Label value ↔ combination of overlapping structures, and the nnU-Net regions built from it.

See :mod:`cervicontour.baselines.nnunet` for why and how the encoding is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cervicontour.errors import InputError

#: dataset.json key holding the label value → structure combination table.
ENCODING_KEY = "cervicontour_encoding"


@dataclass(frozen=True)
class RegionEncoding:
    """Label value ↔ combination of structures, and the nnU-Net regions built from it.

    Attributes:
        structures: structure names, in region order (nnU-Net's output channels).
        combinations: ``combinations[v - 1]`` = the structures that contain label value ``v``;
            each a non-empty tuple in ``structures`` order. Label 0 is background.

    Example:
        >>> enc = RegionEncoding.from_bits(("Bladder", "Parametrium"), [1, 2, 3])
        >>> enc.labels()
        {'background': 0, 'Bladder': [1, 3], 'Parametrium': [2, 3]}
        >>> enc.regions_class_order()
        [1, 2]
    """

    structures: tuple[str, ...]
    combinations: tuple[tuple[str, ...], ...]

    @classmethod
    def from_bits(cls, structures: Sequence[str], codes: Iterable[int]) -> RegionEncoding:
        """Build the encoding from the bit codes that occur (bit ``i`` = ``structures[i]``).

        Label values are assigned by (number of structures, bit code): single structures first.
        Code 0 (background) is ignored.
        """
        structures = tuple(structures)
        codes = sorted({int(c) for c in codes if int(c)}, key=lambda c: (c.bit_count(), c))
        if any(c >> len(structures) for c in codes):
            raise ValueError(f"bit codes {codes} do not fit {len(structures)} structures")
        return cls(structures, tuple(tuple(s for i, s in enumerate(structures) if c >> i & 1) for c in codes))

    @classmethod
    def from_dataset_json(cls, meta: Mapping) -> RegionEncoding:
        """Read the encoding back from a dataset.json dict (ours, or a plain nnU-Net one).

        A dataset.json without :data:`ENCODING_KEY` is read from its ``labels``: an integer label is
        its own structure, a region ``[a, b]`` marks those label values as containing it.
        """
        if ENCODING_KEY in meta:
            table = meta[ENCODING_KEY]
            values = sorted(int(v) for v in table["label_values"])
            if values != list(range(1, len(values) + 1)):
                raise InputError(f"dataset.json {ENCODING_KEY}: expected label values 1..N, got {values}")
            return cls(tuple(table["structures"]), tuple(tuple(table["label_values"][str(v)]) for v in values))
        members: dict[int, list[str]] = {}
        names = [n for n in meta["labels"] if n.lower() not in ("background", "ignore")]
        for name in names:
            values = meta["labels"][name]
            for value in values if isinstance(values, (list, tuple)) else [values]:
                members.setdefault(int(value), []).append(name)
        top = max(members, default=0)
        return cls(tuple(names), tuple(tuple(members.get(v, ())) for v in range(1, top + 1)))

    @property
    def num_labels(self) -> int:
        """Number of foreground label values (the highest value)."""
        return len(self.combinations)

    @property
    def has_overlaps(self) -> bool:
        return any(len(c) > 1 for c in self.combinations)

    @property
    def is_region_based(self) -> bool:
        """nnU-Net trains regions (one sigmoid each) iff some structure spans > 1 label value,
        i.e. iff structures overlap; otherwise plain labels (softmax) and no regions are declared."""
        return self.has_overlaps

    def code_of(self, combination: Iterable[str]) -> int:
        return sum(1 << self.structures.index(s) for s in combination)

    def labels(self) -> dict[str, object]:
        """nnU-Net's ``labels``: background 0, then structure → label values containing it
        (a list: a region), or its one label value (an int) when nothing overlaps."""
        out: dict[str, object] = {"background": 0}
        for name in self.structures:
            values = [v for v, combo in enumerate(self.combinations, 1) if name in combo]
            out[name] = values if self.is_region_based or len(values) != 1 else values[0]
        return out

    def regions_class_order(self) -> list[int]:
        """Label value nnU-Net writes for each region: the structure alone, else its smallest combination."""
        order = []
        for name in self.structures:
            candidates = [(len(c), v) for v, c in enumerate(self.combinations, 1) if name in c]
            if not candidates:
                raise InputError(
                    f"structure {name!r} has no voxels in any training case: expected every exported "
                    f"structure to occur at least once; drop it with --structures"
                )
            order.append(min(candidates)[1])
        return order

    def lookup(self) -> np.ndarray:
        """Array mapping a bit code (index) to its label value (0 for codes that never occur)."""
        lut = np.zeros(1 << len(self.structures), np.uint16)
        for value, combo in enumerate(self.combinations, 1):
            lut[self.code_of(combo)] = value
        return lut

    def encode(self, masks: Mapping[str, np.ndarray]) -> np.ndarray:
        """Binary masks (same shape) → label map; raises if a voxel's combination has no value."""
        codes = bit_codes([masks[s] for s in self.structures])
        lut = self.lookup()
        unknown = sorted(set(np.unique(codes).tolist()) - {0} - {self.code_of(c) for c in self.combinations})
        if unknown:
            missing = [tuple(s for i, s in enumerate(self.structures) if c >> i & 1) for c in unknown]
            raise InputError(f"combinations {missing} have no label value in this encoding (known: {self.combinations})")
        return lut[codes].astype(label_dtype(self.num_labels))

    def decode(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Label map → one boolean mask per structure (a voxel in every structure of its combination)."""
        values = np.unique(label_map)
        if values.size and (values.min() < 0 or values.max() > self.num_labels):
            raise InputError(f"label map holds values {values.tolist()}; the encoding knows 0..{self.num_labels}")
        return {s: np.isin(label_map, [v for v, c in enumerate(self.combinations, 1) if s in c]) for s in self.structures}

    def to_json(self) -> dict:
        return {
            "structures": list(self.structures),
            "label_values": {str(v): list(c) for v, c in enumerate(self.combinations, 1)},
            "note": "label value -> the structures a voxel with that value belongs to (written by cervicontour)",
        }


def bit_codes(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel bit code: bit ``i`` set where ``masks[i]`` is non-zero (uint8/16/32 as needed)."""
    dtype = np.uint8 if len(masks) <= 8 else np.uint16 if len(masks) <= 16 else np.uint32
    codes = np.zeros(np.shape(masks[0]), dtype)
    for i, mask in enumerate(masks):
        codes |= (np.asarray(mask) != 0).astype(dtype) << dtype(i)
    return codes


def label_dtype(num_labels: int) -> type:
    return np.uint8 if num_labels < 255 else np.uint16
