"""A real predict output folder for the review page tests: one phantom patient, the shipped model.

The sub-structures the phantom was drawn with are copied beside the drafts
(``structures/sub``), as a clinician's planning system would provide them, so CTVn / CTVp can be
composed from their parts; the model's own drafts of the nodal groups (also in ``structures/sub``)
are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_predict_output(root: Path) -> Path:
    """``root/pred``: predict output of a 1-patient small phantom cohort (seed 7), with sub-structures."""
    from cervicontour.pipeline import predict
    from cervicontour.synth import synthesize_cohort

    cohort = synthesize_cohort(root / "cohort", patients=1, holdout=0, seed=7, size="small")
    out = root / "pred"
    predict(cohort, out, model="default", all_cases=True)
    for case in out.iterdir():
        sub = Path(cohort) / case.name / "structures" / "sub"
        if sub.is_dir():
            (case / "structures" / "sub").mkdir(exist_ok=True)
            for part in sub.iterdir():
                if not (case / "structures" / "sub" / part.name).exists():
                    shutil.copy2(part, case / "structures" / "sub" / part.name)
    return out
