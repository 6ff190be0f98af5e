"""The drift canary, normalisation to its baseline, re-measurement on drift, and models measured together.

The device's speed is scripted: every session (canary or model) counts, and from some session on the whole "device"
runs slower, as a throttling device would; nothing depends on the machine running the tests. A measurement with the
canary opens two sessions (the canary's, then the model's) and interleaves their runs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import hwprofile
from hwprofile.canary import CANARY_NAME
from hwprofile.drift import BASELINE_PAUSE_S
from hwprofile.drift import BASELINE_READINGS as B  # a baseline takes sessions 1..B
from tests.hwprofile.conftest import FAST, Scripted, is_canary

# The canary's identity: a change to its graph or weights changes every baseline's meaning, so it must be deliberate.
CANARY_SHA256 = "cb12e18aa9f8136048f6b6eb2a66462b5f4486bed55931b27182e603d4610b39"
CANARY_MS, STUDENT_MS = 1.0, 3.0


def device(slow: Callable[[int], bool]) -> Callable[[Path, int], float]:
    """A scripted device: the canary takes 1 ms and any other model 3 ms, twice that while ``slow(sessions)`` is true
    of the number of sessions opened so far (a whole device is slow or not: every open session sees the same)."""
    sessions = [0]

    def latency(path: Path, call: int) -> float:
        if call == 1:  # the cold run: a session has just opened
            sessions[0] += 1
        factor = 2.0 if slow(sessions[0]) else 1.0
        return factor * (CANARY_MS if is_canary(path) else STUDENT_MS)

    return latency


@pytest.fixture
def model(tmp_path: Path, small_onnx: Path) -> Path:
    path = tmp_path / "student.onnx"
    path.write_bytes(small_onnx.read_bytes())
    return path


def test_the_canary_is_the_same_bytes_in_every_process() -> None:
    assert hwprofile.canary_sha256() == CANARY_SHA256
    fresh = subprocess.run([sys.executable, "-c", "import hwprofile; print(hwprofile.canary_sha256())"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == CANARY_SHA256
    path = hwprofile.canary_path()
    assert path.name == f"{CANARY_NAME}.onnx" and path.read_bytes() == hwprofile.canary_bytes()
    onnx.checker.check_model(onnx.load(str(path)))
    stats = hwprofile.model_stats(path)
    assert stats.params == 29642 and stats.macs == 7849216


def test_the_canary_runs_with_the_models_setup(small_onnx: Path) -> None:
    config = dataclasses.replace(FAST, dims={"seq": 128}, threads=2)  # named dims are the model's, not the canary's
    short = hwprofile.canary_config(config)
    assert short.setup() == {**config.setup(), "dims": {}} and short.min_seconds <= config.min_seconds
    result = hwprofile.measure_local(small_onnx, FAST, canary=True)
    assert result.canary is not None and result.canary.model_sha256 == CANARY_SHA256
    assert result.canary.canary_ms > 0 and result.canary.ratio > 0 and result.canary.spread >= 0
    with pytest.raises(hwprofile.InvalidOptionError, match="drift canary is an ONNX model"):
        hwprofile.canary_config(hwprofile.MeasureConfig(backend="torch-cuda"))


def test_normalised_latency_is_the_ratio_to_the_canary_times_the_baseline() -> None:
    reading = hwprofile.CanaryReading.from_blocks(np.array([3.0, 6.0, 3.3, 6.6]), np.array([1.0, 2.0, 1.1, 2.2]),
                                                  CANARY_SHA256)
    # the 3 quietest pairs (at least 3; only the first is within 5% of the fastest tenth of both)
    assert reading.ratio == pytest.approx(3.0) and reading.canary_ms == pytest.approx(1.1)
    assert reading.spread == pytest.approx(1.4826 * 0.5 / 1.55)  # the device moved during the measurement
    # a load over most of the measurement slowed the model more than the canary: the ratio is read where it was quiet
    loaded = hwprofile.CanaryReading.from_blocks(np.array([3.0, 3.06, 3.03] + [9.0] * 7),
                                                 np.array([1.0, 1.02, 1.01] + [2.0] * 7), CANARY_SHA256)
    assert loaded.ratio == pytest.approx(3.0) and loaded.canary_ms == pytest.approx(1.01)
    # a load that slowed most of the model's blocks but none of the canary's: those pairs say nothing of the device
    one_sided = hwprofile.CanaryReading.from_blocks(np.array([3.0] * 4 + [4.5] * 6), np.ones(10), CANARY_SHA256)
    assert one_sided.ratio == pytest.approx(3.0) and one_sided.canary_ms == pytest.approx(1.0)
    baseline = hwprofile.CanaryBaseline(canary_ms=2.0, model_sha256=CANARY_SHA256)
    slower = hwprofile.CanaryReading(canary_ms=2.5, ratio=2.0, spread=0.01, model_sha256=CANARY_SHA256)
    drift = baseline.check(slower, remeasured=2)
    assert drift.normalised_ms == pytest.approx(4.0) and drift.drift == pytest.approx(0.25)
    assert drift.latency_drift and drift.remeasured == 2 and drift.canary_baseline_ms == 2.0
    steady = hwprofile.CanaryReading(canary_ms=2.08, ratio=2.0, spread=0.3, model_sha256=CANARY_SHA256)
    assert baseline.distance(steady) == pytest.approx(0.04) and not baseline.drifted(steady)  # within 5%
    with pytest.raises(ValueError, match="cannot be held against a baseline of canary"):
        baseline.distance(hwprofile.CanaryReading(2.0, 1.0, 0.0, "another canary"))
    with pytest.raises(ValueError, match="finite latencies and ratio > 0"):
        hwprofile.CanaryReading(0.0, 1.0, 0.0, CANARY_SHA256)


def test_a_canary_that_slows_for_good_is_remeasured_and_flagged(model: Path, scripted: Scripted) -> None:
    # sessions 1..B: the baseline; B+1..B+4: canary and model, twice (steady); then the device runs at half speed
    config = scripted(model_latency=device(lambda session: session > B + 4))
    baseline = dataclasses.replace(hwprofile.measure_baseline(config), backoff_s=0.05)  # waits 0.05, 0.1, 0.2 s
    assert baseline.canary_ms == CANARY_MS and baseline.model_sha256 == CANARY_SHA256
    steady = hwprofile.profile(model, config, baseline=baseline)
    assert steady.latency.median_ms == STUDENT_MS
    assert steady.canary == hwprofile.CanaryReading(CANARY_MS, STUDENT_MS / CANARY_MS, 0.0, CANARY_SHA256)
    assert steady.drift == hwprofile.Drift(1.0, 1.0, STUDENT_MS, 0.0, False, 0)
    start = time.perf_counter()
    slowed = hwprofile.profile(model, config, baseline=baseline)  # twice 2 sessions, then thrice 2 more
    assert time.perf_counter() - start >= 0.35  # each re-measurement waited, twice as long as the one before
    assert slowed.latency.median_ms == 2 * STUDENT_MS and slowed.canary.canary_ms == 2 * CANARY_MS
    assert slowed.drift is not None and slowed.drift.remeasured == baseline.remeasures == 3
    assert slowed.drift.latency_drift and slowed.drift.drift == 1.0
    assert slowed.normalised_ms == STUDENT_MS  # the drift corrected: 6 ms / 2 ms x 1 ms


def test_a_passing_slowdown_is_measured_again_and_not_flagged(model: Path, scripted: Scripted) -> None:
    # the first two attempts' sessions are slow, the re-measurement's steady
    config = scripted(model_latency=device(lambda session: B < session <= B + 4))
    baseline = hwprofile.measure_baseline(config)
    result = hwprofile.profile(model, config, baseline=baseline)
    assert result.drift == hwprofile.Drift(1.0, 1.0, STUDENT_MS, 0.0, False, 1)
    assert result.latency.median_ms == STUDENT_MS


def test_a_slowdown_only_the_model_saw_is_outrun_by_the_second_attempt(model: Path, scripted: Scripted) -> None:
    # the model's first session of a measurement runs 40% slow (a load the canary missed, or a slow session): the
    # canary is steady, so nothing calls for a re-measurement; one attempt reads the slow session, two do not
    sessions, slow = [0], [B + 2]  # the baseline, then the canary's session, then the model's

    def latency(path: Path, call: int) -> float:
        sessions[0] += call == 1
        return CANARY_MS if is_canary(path) else STUDENT_MS * (1.4 if sessions[0] == slow[0] else 1.0)

    config = scripted(model_latency=latency)
    baseline = hwprofile.measure_baseline(config)
    once = hwprofile.profile(model, config, baseline=dataclasses.replace(baseline, attempts=1))
    assert once.normalised_ms == pytest.approx(1.4 * STUDENT_MS) and not once.drift.latency_drift
    slow[0] = sessions[0] + 2
    twice = hwprofile.profile(model, config, baseline=baseline)
    assert twice.latency.median_ms == STUDENT_MS and twice.drift == hwprofile.Drift(1.0, 1.0, STUDENT_MS, 0.0, False, 0)


def test_the_baseline_is_the_fastest_of_readings_taken_apart(scripted: Scripted) -> None:
    config = scripted(model_latency=device(lambda session: session <= 3))  # a load over 3 of the 5 readings
    start = time.perf_counter()
    baseline = hwprofile.measure_baseline(config)
    assert time.perf_counter() - start >= (B - 1) * BASELINE_PAUSE_S
    assert baseline.canary_ms == CANARY_MS  # a median would have read the load


def test_a_baseline_taken_in_a_slow_stretch_judges_slowdowns_by_the_fastest_canary_met(model: Path,
                                                                                      scripted: Scripted) -> None:
    # the baseline's readings all fall in a slow stretch; the first measurement meets the device at its speed; the
    # next one's two attempts meet the slow stretch again, which reads no slower than the baseline
    config = scripted(model_latency=device(lambda session: session <= B or B + 4 < session <= B + 8))
    baseline = dataclasses.replace(hwprofile.measure_baseline(config), backoff_s=0.01)
    assert baseline.canary_ms == 2 * CANARY_MS
    first = hwprofile.profile(model, config, baseline=baseline)
    assert first.drift is not None and first.drift.remeasured == 0 and first.drift.latency_drift  # faster: flagged
    met = baseline.after(first)
    assert met.fastest_seen_ms == CANARY_MS and met.canary_ms == baseline.canary_ms  # normalised to the same moment
    assert baseline.after(dataclasses.replace(first, cached=True)) == baseline  # another moment's reading
    assert met.after(first) == met
    second = hwprofile.profile(model, config, baseline=met)
    assert second.drift is not None and second.drift.remeasured == 1  # the baseline alone would not have re-measured
    assert second.latency.median_ms == STUDENT_MS and second.canary.canary_ms == CANARY_MS


def test_a_canary_faster_than_its_baseline_is_flagged_not_remeasured(model: Path, scripted: Scripted) -> None:
    config = scripted(model_latency=device(lambda session: False))
    slow_moment = hwprofile.CanaryBaseline(canary_ms=2 * CANARY_MS, model_sha256=CANARY_SHA256)  # waiting cannot help
    result = hwprofile.profile(model, config, baseline=slow_moment)
    assert result.drift == hwprofile.Drift(2.0, 1.0, 2 * STUDENT_MS, -0.5, True, 0)


def test_a_device_that_slows_during_a_measurement_is_corrected_block_by_block(model: Path, scripted: Scripted) -> None:
    # the device halves its speed part-way through the timed runs: the raw median mixes both speeds, the ratio of
    # each block pair does not
    calls = [0]

    def latency(path: Path, call: int) -> float:
        calls[0] += 1
        factor = 2.0 if calls[0] > 30 else 1.0
        return factor * (CANARY_MS if is_canary(path) else STUDENT_MS)

    config = scripted(model_latency=latency)
    baseline = hwprofile.CanaryBaseline(canary_ms=CANARY_MS, model_sha256=CANARY_SHA256, threshold=1.5)
    result = hwprofile.profile(model, config, baseline=baseline)
    assert result.latency.min_ms == STUDENT_MS and result.latency.median_ms == 2 * STUDENT_MS  # both speeds
    assert result.normalised_ms == STUDENT_MS and result.drift.remeasured == 0


def test_a_cached_measurement_keeps_its_canary_figures(model: Path, tmp_path: Path, scripted: Scripted) -> None:
    cache = hwprofile.MeasurementCache(tmp_path / "cache.sqlite")
    config = scripted(model_latency=device(lambda session: False))
    plain = hwprofile.profile(model, config, cache=cache)  # no canary: a later search cannot normalise it ...
    assert plain.canary is None and len(cache) == 1
    baseline = hwprofile.measure_baseline(config)
    first = hwprofile.profile(model, config, cache=cache, baseline=baseline)  # ... so it is measured again
    assert not first.cached and first.canary is not None and len(cache) == 1
    later = hwprofile.CanaryBaseline(canary_ms=0.5, model_sha256=CANARY_SHA256)  # another search: a faster moment
    again = hwprofile.profile(model, config, cache=cache, baseline=later)
    assert again.cached and again.canary == first.canary and again.started_at == first.started_at
    assert again.drift == hwprofile.Drift(0.5, 1.0, STUDENT_MS / 2, 1.0, True, 0)  # normalised with its figures


def test_a_reading_of_the_older_layout_counts_as_none(model: Path, scripted: Scripted) -> None:
    config = scripted(model_latency=device(lambda session: False))
    stored = hwprofile.profile(model, config, baseline=hwprofile.measure_baseline(config)).to_dict()
    assert hwprofile.Measurement.from_dict(stored).canary == hwprofile.CanaryReading(CANARY_MS, 3.0, 0.0, CANARY_SHA256)
    stored["canary"] = {"before_ms": 1.0, "after_ms": 1.0, "model_sha256": CANARY_SHA256}  # before/after readings
    assert hwprofile.Measurement.from_dict(stored).canary is None  # so a search measures the model again


def test_a_drifted_measurement_is_cached_with_its_figures(model: Path, tmp_path: Path, scripted: Scripted) -> None:
    cache = hwprofile.MeasurementCache(tmp_path / "cache.sqlite")
    config = scripted(model_latency=device(lambda session: session > B))
    baseline = dataclasses.replace(hwprofile.measure_baseline(config), backoff_s=0.0)
    result = hwprofile.profile(model, config, cache=cache, baseline=baseline)
    assert result.drift is not None and result.drift.latency_drift and len(cache) == 1
    slow_moment = hwprofile.CanaryBaseline(canary_ms=2 * CANARY_MS, model_sha256=CANARY_SHA256)
    again = hwprofile.profile(model, config, cache=cache, baseline=slow_moment)  # a search that began slow
    assert again.cached and again.drift == hwprofile.Drift(2.0, 2.0, 2 * STUDENT_MS, 0.0, False, 0)


def test_the_device_baseline_is_kept_in_the_cache(tmp_path: Path, scripted: Scripted) -> None:
    cache = tmp_path / "cache.sqlite"
    config = scripted(model_latency=device(lambda session: session > B))
    first = hwprofile.device_baseline(config, cache=cache)
    assert first.canary_ms == CANARY_MS and len(hwprofile.MeasurementCache(cache)) == 1
    assert hwprofile.device_baseline(config, cache=cache) == first  # the device is slower now: the first one holds
    assert hwprofile.device_baseline(config).canary_ms == 2 * CANARY_MS  # without a cache: measured now


def test_models_measured_together_go_round_robin(tmp_path: Path, small_onnx: Path, scripted: Scripted) -> None:
    opened: list[str] = []

    def latency(path: Path, call: int) -> float:
        if call == 1:
            opened.append(path.stem)
        return {"a": 1.0, "b": 2.0, "c": 3.0}.get(path.stem, 1.0)

    paths = []
    for name in "abc":
        paths.append(tmp_path / f"{name}.onnx")
        paths[-1].write_bytes(small_onnx.read_bytes())  # any valid ONNX file: the script decides the latency
    config = scripted(model_latency=latency)
    baseline = hwprofile.CanaryBaseline(canary_ms=0.5, model_sha256=CANARY_SHA256)  # the canary runs at 1 ms now
    rounds = hwprofile.measure_together(paths, config, baseline, rounds=3)
    models = [name for name in opened if name != CANARY_NAME]
    assert models == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one model later
    assert opened.count(CANARY_NAME) == 9  # interleaved with every measurement
    assert [[m.normalised_ms for m in model] for model in rounds] == [[0.5] * 3, [1.0] * 3, [1.5] * 3]
    assert all(m.drift is not None and m.drift.remeasured == 0 and not m.cached for model in rounds for m in model)
    slow_round = dataclasses.replace(rounds[2][0], drift=dataclasses.replace(rounds[2][0].drift, normalised_ms=2.0))
    assert hwprofile.fastest_normalised([slow_round, *rounds[2][1:]]) == 1.5  # a slowed round does not count
    with pytest.raises(ValueError, match="No measurement was normalised"):
        hwprofile.fastest_normalised([dataclasses.replace(rounds[0][0], drift=None)])
