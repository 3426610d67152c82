"""The dependency rule: the core modules work from plain Python, without pytest."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "measure.meter",
    "run.session",
    "judging.judge",
    "stats",
    "store.baseline",
    "present.report",
    "host.fingerprint",
    "store.files",
    "host.locks",
    "host.pinning",
    "host.distributed",
    "cli.main",
    "config.settings",
    "sensors",
    "sensors.nvml",
    "sensors.rapl",
    "sensors.sim",
    "sensors.cpu_estimate",
    "measure.samples",
    "measure.window",
    "verdict",
    "config.options",
    "judging.model",
    "judging.kernels",
    "judging.prior",
    "judging.shift",
    "judging.decide",
    "testing",
    "count",
    "prefill_decode",
    "host.procstat",
    "serving.process",
    "serving.servers",
    "present.exports",
    "present.mdreport",
    "present.plots",
    "present.progress",
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
        "import sys, pytest, pytest_tpw.hooks.plugin; "
        "heavy = [m for m in ('numpy', 'scipy', 'pytest_tpw.measure.meter', 'pytest_tpw.stats', "
        "'pytest_tpw.run.session', 'pytest_tpw.config.settings', 'pytest_tpw.judging.decide', "
        "'pytest_tpw.measure.window') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
