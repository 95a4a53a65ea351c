"""`StructureSet`: one patient's binary masks, on one grid, keyed by canonical structure name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name
from cervicontour.volume import Volume


class StructureSet(Mapping[str, Volume]):
    """Read-only mapping ``canonical name → binary mask Volume``, all on the same grid.

    Lookup accepts synonyms in any case (``ss["rectum"]`` is the Anorectum). Masks are stored as
    boolean arrays; inputs are never modified.

    Raises:
        InputError: a mask is not on the grid of the first one (what differs is named).

    Example:
        >>> grid = Volume(np.zeros((4, 4, 4), bool), (1.0, 1.0, 2.5))
        >>> ss = StructureSet({"Rectum": grid})
        >>> ss.names, round(ss.volume_cc("anorectum"), 3)
        (['Anorectum'], 0.0)
    """

    def __init__(self, masks: Mapping[str, Volume], *, tolerance_mm: float = 1e-3) -> None:
        self._masks: dict[str, Volume] = {}
        reference: Volume | None = None
        for name, mask in masks.items():
            canonical = canonical_name(name)
            if canonical in self._masks:
                raise InputError(f"two masks for {canonical!r} (synonyms); keep one")
            if reference is None:
                reference = mask
            elif not reference.same_grid(mask, tolerance_mm=tolerance_mm):
                raise InputError(
                    f"mask {canonical!r} is not on the grid of {next(iter(self._masks))!r}: "
                    f"{'; '.join(reference.grid_differences(mask, tolerance_mm=tolerance_mm))}; "
                    "resample it onto the image grid (`cervicontour clean`)"
                )
            binary = mask.array if mask.array.dtype == bool else mask.array > 0
            self._masks[canonical] = mask.with_array(binary)

    def __getitem__(self, name: str) -> Volume:
        canonical = canonical_name(name)
        try:
            return self._masks[canonical]
        except KeyError:
            raise KeyError(f"no {canonical!r} in this structure set (has: {', '.join(self.names) or 'none'})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    @property
    def names(self) -> list[str]:
        """Canonical names, the primary five first (in label order), then the rest sorted."""
        return sorted(self._masks, key=lambda n: (n not in PRIMARY, PRIMARY.index(n) if n in PRIMARY else 0, n))

    def volume_cc(self, name: str) -> float:
        """Volume of one structure in cc (voxel count × voxel volume)."""
        mask = self[name]
        return float(np.count_nonzero(mask.array)) * mask.voxel_volume_cc

    def union(self, *names: str) -> Volume:
        """Union of the named masks (names absent from the set are an error)."""
        if not names:
            raise ValueError("union() needs at least one structure name")
        masks = [self[n] for n in names]
        out = np.zeros(masks[0].shape, bool)
        for mask in masks:
            out |= mask.array
        return masks[0].with_array(out)

    def __repr__(self) -> str:
        if not self._masks:
            return "StructureSet(empty)"
        first = next(iter(self._masks.values()))
        return f"StructureSet({', '.join(self.names)}; grid {first.shape} {first.orientation})"
