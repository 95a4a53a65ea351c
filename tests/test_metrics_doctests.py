"""The docstring examples of the metrics package run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "cervicontour.metrics",
    "cervicontour.metrics.boundary",
    "cervicontour.metrics.crop",
    "cervicontour.metrics.editing",
    "cervicontour.metrics.evaluate",
    "cervicontour.metrics.moments",
    "cervicontour.metrics.nearest",
    "cervicontour.metrics.overlap",
    "cervicontour.metrics.parts",
    "cervicontour.metrics.summary",
    "cervicontour.metrics.surface",
    "cervicontour.report.metrics_report",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": importlib.import_module("numpy")}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_metrics_never_import_torch():
    import subprocess
    import sys

    code = "import sys, cervicontour.metrics, cervicontour.report.metrics_report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
