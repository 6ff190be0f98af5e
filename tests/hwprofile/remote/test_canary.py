"""The drift canary through the device agent: measured in the same request, and old agents refused clearly."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import hwprofile
from tests.hwprofile.conftest import CanaryBackend, Scripted
from tests.hwprofile.remote.conftest import TOKEN, client

pytest.importorskip("hwprofile.remote.agent", reason="the device agent needs the 'agent' extra")


def test_the_agent_measures_the_canary_in_the_same_request(serve_agent: Callable[..., str], scripted: Scripted,
                                                            small_onnx: Path) -> None:
    config = scripted(backend=CanaryBackend)  # canary 2 ms, model 1 ms, run in the agent's measurement process
    url = serve_agent(TOKEN)
    remote = client(url)
    assert remote.info()["api"] == 2 and remote.info()["canary"] == hwprofile.canary_sha256()
    plain = remote.profile(small_onnx, config)  # an API 1 client's request: no canary, as before
    assert plain.canary is None and plain.latency.median_ms == 1.0
    baseline = hwprofile.measure_baseline(config, target=remote)  # the canary uploaded, measured alone
    assert baseline.canary_ms == 2.0
    result = hwprofile.profile(small_onnx, config, target=remote, baseline=dataclasses.replace(baseline, canary_ms=1.0, backoff_s=0.0))
    assert result.target == url and result.canary == hwprofile.CanaryReading(2.0, 0.5, 0.0, hwprofile.canary_sha256())
    assert result.drift is not None and result.drift.normalised_ms == 0.5  # 1 ms / 2 ms x 1 ms
    assert result.drift.latency_drift and result.drift.remeasured == baseline.remeasures


def test_a_bad_canary_option_is_a_400(agent: str, small_onnx: Path) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="Option 'canary' must be true or false, but got 'maybe'"):
        client(agent)._request("POST", "/v1/profile?canary=maybe", small_onnx.read_bytes(),
                               {"Content-Type": "application/octet-stream"})


def test_an_agent_older_than_the_canary_is_a_clear_error(not_an_agent: Callable[..., str], small_onnx: Path) -> None:
    info = {"api": 1, "fingerprint": {}, "backends": {"ort": {"available": True, "version": "1"}}}
    old = not_an_agent(json.dumps(info).encode())
    with pytest.raises(hwprofile.AgentError, match=r"speaks API 1, which cannot measure the drift canary .*API 2.*update "
                                                   r"nas-kd on the device"):
        client(old).profile(small_onnx, canary=True)
    other = not_an_agent(json.dumps({**info, "api": 2, "canary": "0" * 64}).encode())
    with pytest.raises(hwprofile.AgentError, match="builds another drift canary .*install the same nas-kd version"):
        hwprofile.profile(small_onnx, target=client(other), baseline=hwprofile.CanaryBaseline(1.0, "0" * 64))


def test_an_answer_without_the_canary_figures_is_refused(not_an_agent: Callable[..., str], small_onnx: Path) -> None:
    info = {"api": 2, "fingerprint": {}, "backends": {"ort": {"available": True, "version": "1"}},
            "canary": hwprofile.canary_sha256()}
    answer = hwprofile.measure_local(small_onnx, hwprofile.MeasureConfig(min_seconds=0.01)).to_dict()
    url = not_an_agent(json.dumps(info).encode(), json.dumps(answer).encode())
    with pytest.raises(hwprofile.AgentError, match="not a measurement with the canary's figures"):
        client(url).profile(small_onnx, canary=True)
