"""What loading weights into a network did (:class:`TransferReport`): shared by :mod:`.transfer` and :mod:`.merlin`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TransferReport:
    """Which tensors were loaded, skipped (with why) or reshaped (from → to, how)."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reshaped: list[tuple[str, list, list, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source, "kind": self.kind,
            "counts": {"loaded": len(self.loaded), "skipped": len(self.skipped), "reshaped": len(self.reshaped)},
            "loaded": self.loaded, "skipped": [list(s) for s in self.skipped],
            "reshaped": [list(r) for r in self.reshaped], "notes": self.notes,
        }  # fmt: skip

    def summary(self) -> str:
        return f"{self.kind} {self.source}: {len(self.loaded)} loaded, {len(self.reshaped)} reshaped, {len(self.skipped)} skipped"
