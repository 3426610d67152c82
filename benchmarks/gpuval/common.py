"""Shared by the package: the tree's paths, the JSON alias, child-process env, JSON writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_validation.py"
SUITE = ROOT / "benchmarks" / "gpu_validation_suite" / "gpu_suite_decode.py"

Json = dict[str, Any]


def inner_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "examples"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # load the plugin from this tree, nothing else
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra)
    return env


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
