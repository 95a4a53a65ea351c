"""Shared fixtures: a small synthetic cohort made once per session, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: ../shared/data/real relative to the project root; tests using it skip when it is absent.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def real_data(*parts: str) -> Path:
    """Path under the real-data folder, or skip the test with the reason."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (only on the development machines)")
    return path


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """5 labelled + 1 hold-out small phantom patients, seed 7 (covers every scheduled edge case)."""
    from cervicontour.synth import synthesize_cohort

    out = tmp_path_factory.mktemp("cohort") / "c"
    return synthesize_cohort(out, patients=5, holdout=1, seed=7, size="small")
