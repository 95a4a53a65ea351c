"""Clinician review page: look at the draft contours, choose CTV components, accept or reject.

A local web server (FastAPI on uvicorn) over one predict output folder (cohort layout:
``OUT_DIR/<patient_id>/structures/<Name>.nii.gz`` + ``prediction.json``). The page shows the CT
and each structure in NiiVue (served from this package, never a CDN), the rule findings and the
"review closely" flags, lets the clinician correct a structure with a box on an axial slice
(LiteMedSAM proposes, the clinician accepts into a new edited mask), and records every decision
and edit in an append-only ``OUT_DIR/<patient_id>/review.json``.

Layout::

    cases      what a case folder holds: structures, CT, findings, downsampled previews
    decisions  the append-only review log, composing CTVs into new files, RTSTRUCT of the accepted set
    correct    box corrections: a drag in world mm → slice and box, LiteMedSAM's proposal, accept/discard
    server     the ASGI app (token on every request, only files under OUT_DIR) and ``serve``

The core never imports this subpackage; it needs the ``[review]`` extra
(``pip install 'cervicontour[review]'``).
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):  # lazy: importing the package must not import FastAPI
    if name in __all__:
        from cervicontour.review import server

        return getattr(server, name)
    raise AttributeError(name)
