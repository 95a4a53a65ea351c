"""cervicontour: draft radiotherapy contours for cervical cancer, for clinician review.

The packages are layered in data-flow order. docs/architecture.md has the table, and
tests/test_architecture.py fails on an import circle or an upward import. Nothing heavy is
imported here.
"""

__version__ = "0.8.0"
