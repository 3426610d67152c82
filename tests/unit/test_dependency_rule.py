"""The dependency rule: the core modules work from plain Python, without pytest."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "meter",
    "session",
    "judge",
    "stats",
    "baseline",
    "report",
    "fingerprint",
    "files",
    "locks",
    "pinning",
    "distributed",
    "cli",
    "settings",
    "sensors",
    "sensors.nvml",
    "sensors.rapl",
    "sensors.sim",
    "sensors.cpu_estimate",
    "samples",
    "window",
    "verdict",
    "options",
    "suite",
    "testing",
    "count",
    "prefill_decode",
    "procstat",
    "server",
    "serving",
    "exports",
    "mdreport",
    "plots",
    "progress",
]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_without_pytest(module: str) -> None:
    code = (
        f"import sys, pytest_tpw.{module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pytest_tpw.{module} imports {out.stdout.strip()}"


def test_plugin_off_mode_does_not_load_the_measuring_modules() -> None:
    code = (
        "import sys, pytest, pytest_tpw.plugin; "
        "heavy = [m for m in ('numpy', 'scipy', 'pytest_tpw.meter', 'pytest_tpw.stats', "
        "'pytest_tpw.session', 'pytest_tpw.settings', 'pytest_tpw.suite', "
        "'pytest_tpw.window') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
