"""Real predict output folders for the review page tests: one phantom patient (small, seed 7).

:func:`make_predict_output` predicts the phantom's NIfTI CT with the shipped model; the sub-structures the phantom was drawn with are copied beside the drafts
(``structures/sub``), as a clinician's planning system would provide them, so CTVn / CTVp can be
composed from their parts; the model's own drafts of the nodal groups (also in ``structures/sub``)
are kept. :func:`make_dicom_predict_output` predicts the same CT written as a DICOM series (so the
page can export an RTSTRUCT) with any model, and adds nothing: ``structures/sub`` holds only the
parts that model predicted.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_predict_output(root: Path) -> Path:
    """``root/pred``: predict output of a 1-patient small phantom cohort (seed 7), with sub-structures."""
    from cervicontour.inference.cohort import predict
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


def make_dicom_predict_output(root: Path, model: str | Path = "default") -> tuple[Path, Path]:
    """``(root/pred, root/dicom/SYN001)``: ``model``'s predict output of the phantom's CT as a DICOM series."""
    import numpy as np

    from cervicontour.cohort import load_cohort
    from cervicontour.inference.cohort import predict
    from cervicontour.synth import synthesize_cohort
    from dicom_factory import write_ct_series

    cohort = synthesize_cohort(root / "cohort", patients=1, holdout=0, seed=7, size="small")
    image = load_cohort(cohort)["SYN001"].load_image()
    assert image.orientation == "LPS"
    sx, sy, sz = image.spacing_mm
    stored = np.clip(image.array.astype(np.int32) + 1024, 0, 65535).astype(np.uint16)
    series = root / "dicom" / "SYN001"
    write_ct_series(series, stored, origin_mm=tuple(image.origin_mm), pixel_spacing_mm=(sy, sx), slice_step_mm=sz, clinical_header=True)
    out = root / "pred"
    predict(series, out, model=model, patient_id="SYN001")  # the factory's PatientID is SYNTH01
    return out, series
