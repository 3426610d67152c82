"""The --tpw-json document: every sample, summaries, the judge's figures, the run order."""

from __future__ import annotations

import json

import pytest

from pytest_tpw.judging.judge import Judgement
from pytest_tpw.measure.samples import Measurement
from pytest_tpw.present.document import json_document
from pytest_tpw.store import files
from pytest_tpw.verdict import Verdict
from tests.unit.present.test_report import sample

# -- json_document ---------------------------------------------------------------------------


def test_json_document_round_trips_through_dump_json() -> None:
    m = Measurement(
        "tests/a.py::test_a",
        None,
        "nvml",
        "measured",
        warmup=1,
        samples=[sample(100, 4.0), sample(110, 4.0), sample(90, 4.0)],
        warnings=["hot"],
    )
    single = Measurement("tests/a.py::test_b", "x", "nvml", "measured", samples=[sample(10, 2.0)])
    empty = Measurement("tests/a.py::test_c", None, "nvml", "measured")
    measurements = {
        m.key: (m, m.summarize(0.9, Verdict.UNCHANGED)),
        single.key: (single, single.summarize(0.9, Verdict.NO_BASELINE)),
        empty.key: (empty, None),
    }
    judged = Judgement(
        m.key, m.nodeid, Verdict.IMPROVED, 0.05, baseline_level=20.0, notes=["better"]
    )
    doc = json_document(
        measurements, {m.key: judged}, {"hardware_key": "x-x1"}, {"tolerance": 0.05}
    )
    text = files.dump_json(doc)  # allow_nan=False: must not raise on normal data
    assert json.loads(text) == doc
    assert doc["schema"] == 1
    a = doc["measurements"]["tests/a.py::test_a"]
    assert [s["tokens"] for s in a["samples"]] == [100, 110, 90]
    assert a["samples"][0]["tokens_per_joule"] == 25.0  # 100 / 4
    assert a["summary"]["n"] == 3
    assert isinstance(a["summary"]["ci"], list) and len(a["summary"]["ci"]) == 2
    assert a["warnings"] == ["hot"]
    # the judgement's verdict wins over the result's, and its figures are in "comparison"
    assert a["verdict"] == "IMPROVED"
    assert a["comparison"] == {
        "verdict": "IMPROVED",
        "baseline_tokens_per_joule": 20.0,
        "tolerance": 0.05,
        "rounds": None,
        "canary": False,
        "failures": [],
        "notes": ["better"],
        "instrument_bound": None,
    }
    # the run order, for judging the document again offline
    assert [e["order"] for e in doc["measurements"].values()] == [0, 1, 2]
    assert doc["environment"] == {"hardware_key": "x-x1"}
    assert doc["settings"] == {"tolerance": 0.05}
    b = doc["measurements"]["tests/a.py::test_b::x"]
    assert b["name"] == "x"
    assert b["summary"]["tokens_per_joule"] == pytest.approx(5.0)  # 10 / 2
    assert b["summary"]["ci"] is None  # one sample: no interval
    assert b["verdict"] == "NO_BASELINE" and "comparison" not in b  # the result's, unjudged
    c = doc["measurements"]["tests/a.py::test_c"]
    assert "summary" not in c and c["verdict"] == "NO_BASELINE"
