"""Latency across time in a search: the canary baseline kept in the study, raw and normalised latency per trial (the
objective normalised), and the front measured again together before the outputs are written."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hwprofile
from nas import SearchConfig, front_records, random_archs
from nas.cli import main
from nas.drift import BASELINE_ATTR, FRONT_ATTR, remeasure_front
from nas.search import DIRECTIONS, LATENCY_CONSTRAINT, load_context
from search_spaces import arch_hash, get_space
from tests.hwprofile.conftest import Scripted, is_canary, scripted  # noqa: F401  (the fixture)

BUDGET_MS = 3.0


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")


def test_a_search_normalises_every_trial_to_the_baseline_in_its_study(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "3", "--steps", "10", "--teacher-epochs", "3", "--cache-dir", str(cache_dir),
            "--sampler", "random", "--early-stop", "off", "--no-cache", "--out", str(out)]
    assert main(args) == 0
    study = _study(out)
    baseline = hwprofile.CanaryBaseline.from_dict(study.user_attrs[BASELINE_ATTR])
    assert baseline.canary_ms > 0 and baseline.model_sha256 == hwprofile.canary_sha256()
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        latency = trial.user_attrs["latency"]
        canary = hwprofile.CanaryReading(**latency["canary"])
        assert latency["canary_ms"] == canary.canary_ms and latency["canary_baseline_ms"] == baseline.canary_ms
        assert latency["normalised_ms"] == pytest.approx(canary.ratio * baseline.canary_ms)
        assert trial.values[1] == latency["normalised_ms"]  # the objective is the normalised median
        assert isinstance(latency["latency_drift"], bool) and 0 <= latency["remeasured"] <= baseline.remeasures
    rows = {int(row["trial"]): row for row in csv.DictReader((out / "trials.csv").open())}
    for trial in study.trials:
        latency = trial.user_attrs["latency"]
        assert float(rows[trial.number]["latency_ms"]) == pytest.approx(latency["normalised_ms"])
        assert float(rows[trial.number]["latency_raw_ms"]) == pytest.approx(latency["median_ms"])

    together = study.user_attrs[FRONT_ATTR]  # the front, measured together before the outputs were written
    front = json.loads((out / "pareto.json").read_text())
    assert {str(entry["trial"]) for entry in front} == set(together["trials"]) and together["rounds"] == 3
    for entry in front:
        assert entry["latency_front_ms"] == together["trials"][str(entry["trial"])]["fastest_ms"]
        assert len(together["trials"][str(entry["trial"])]["normalised_ms"]) == 3

    args[args.index("--trials") + 1] = "4"  # resumed: normalised to the same baseline, not a new one
    assert main(args) == 0
    study = _study(out)
    assert study.user_attrs[BASELINE_ATTR] == baseline.to_dict()
    newest = study.trials[-1].user_attrs["latency"]
    assert newest["canary_baseline_ms"] == baseline.canary_ms


@pytest.fixture
def front_study(tmp_path: Path) -> optuna.Study:
    """A study as a search with a 3 ms budget leaves it: trials 0 and 1 on the front, 2 within the budget but
    dominated, 3 over it (never trained)."""
    study = optuna.create_study(directions=list(DIRECTIONS))
    archs = random_archs(get_space("mbconv"), 4, seed=0)
    for number, (score, latency_ms) in enumerate([(0.8, 1.0), (0.9, 2.0), (0.7, 2.5), (None, 4.0)]):
        attrs = {"arch": archs[number], "arch_hash": arch_hash(archs[number]), "latency": {"median_ms": latency_ms},
                 "status": "trained" if score is not None else "over_budget"}
        if score is not None:
            attrs["score"] = score
        study.add_trial(optuna.trial.create_trial(values=[score or 0.0, latency_ms], user_attrs=attrs,
                                                  constraints={LATENCY_CONSTRAINT: latency_ms - BUDGET_MS}))
    return study


def test_the_front_is_measured_together_and_reordering_is_logged(front_study: optuna.Study, tmp_path: Path,
                                                                  cache_dir: Path, scripted: Scripted,  # noqa: F811
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    together_ms = {"front-0.onnx": 2.2, "front-1.onnx": 1.8, "front-2.onnx": 2.6, "front-3.onnx": 2.9}
    opened: list[str] = []

    def latency(path: Path, call: int) -> float:
        if call == 1 and not is_canary(path):
            opened.append(path.name)
        return 1.0 if is_canary(path) else together_ms[path.name]

    config = SearchConfig(out=str(tmp_path / "out"), cache_dir=str(cache_dir), latency_budget_ms=BUDGET_MS)
    context = load_context(config, tmp_path)
    context.measure_config = scripted(model_latency=latency)
    context.baseline = hwprofile.CanaryBaseline(canary_ms=1.0, model_sha256=hwprofile.canary_sha256())
    with caplog.at_level(logging.INFO, logger="nas"):
        record = remeasure_front(front_study, context)
    assert record is not None and front_study.user_attrs[FRONT_ATTR] == record
    assert {n: t["role"] for n, t in record["trials"].items()} == {"0": "front", "1": "front", "2": "below_budget",
                                                                   "3": "above_budget"}
    assert opened == ["front-0.onnx", "front-1.onnx", "front-2.onnx", "front-3.onnx", "front-1.onnx", "front-2.onnx",
                      "front-3.onnx", "front-0.onnx", "front-2.onnx", "front-3.onnx", "front-0.onnx", "front-1.onnx"]
    assert record["trials"]["0"]["normalised_ms"] == [2.2] * 3 and record["trials"]["0"]["fastest_ms"] == 2.2
    assert record["trials"]["0"]["canary_ms"] == [1.0] * 3 and record["trials"]["0"]["latency_ms"] == 1.0
    assert record["order_before"] == [0, 1, 2, 3] and record["order_after"] == [1, 0, 2, 3]
    assert record["reordered"] == [0, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert any("trial 0 moves from place 1 to 2" in m for m in messages)
    assert any("trial 1 moves from place 2 to 1" in m for m in messages)
    assert any("Trial 3 measured 4.0000 ms in its trial and 2.9000 ms together" in m for m in messages)
    assert not list(tmp_path.glob("front-*.onnx"))  # the rebuilt students are not left behind

    assert [entry["latency_front_ms"] for entry in front_records(front_study)] == [2.2, 1.8]
    opened.clear()
    assert remeasure_front(front_study, context) == record and opened == []  # the same trials: not measured again
