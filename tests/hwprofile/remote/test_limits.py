"""The bounds a device agent puts on one request, without the agent: options refused or lowered, inputs checked."""

from __future__ import annotations

import numpy as np
import pytest

import hwprofile
from hwprofile.inputs import InputSpec
from hwprofile.remote.limits import MiB, physical_memory_bytes, usable_cores

AgentLimits = hwprofile.remote.AgentLimits


def test_defaults_are_sized_to_the_device() -> None:
    limits = AgentLimits()
    assert limits.max_threads == usable_cores() and limits.max_memory_bytes == physical_memory_bytes() // 2
    assert limits.max_input_bytes == limits.max_memory_bytes // 8 and limits.max_measure_s == 10.0
    assert AgentLimits.from_megabytes(max_body_mb=1, max_memory_mb=100).max_input_bytes == 100 * MiB // 8


@pytest.mark.parametrize(("config", "message"), [
    (hwprofile.MeasureConfig(threads=3), "threads=3 is more than the 2 cores this device agent offers"),
    (hwprofile.MeasureConfig(batch=9), "batch=9 is over this device agent's limit of 8 \\(nas device serve "
                                       "--max-batch\\)"),
    (hwprofile.MeasureConfig(dims={"seq": 101}), "dims {'seq': 101} are over this device agent's limit of 100"),
])
def test_threads_batch_and_dims_over_their_caps_are_refused(config: hwprofile.MeasureConfig, message: str) -> None:
    limits = AgentLimits(max_threads=2, max_batch=8, max_dim=100)
    with pytest.raises(hwprofile.InvalidOptionError, match=message):
        limits.bound(config)
    within = hwprofile.MeasureConfig(threads=2, batch=8, dims={"seq": 100})
    assert limits.bound(within) == (within, {})


def test_seconds_and_repeats_are_lowered_to_their_caps() -> None:
    asked = hwprofile.MeasureConfig(min_seconds=5, max_seconds=15, warmup_seconds=1, repeats_if_unstable=9)
    bounded, lowered = AgentLimits(max_measure_s=2).bound(asked)
    assert (bounded.min_seconds, bounded.max_seconds, bounded.warmup_seconds) == (2, 2, 1)
    assert bounded.repeats_if_unstable == 2
    assert lowered == {"min_seconds": 5, "max_seconds": 15, "repeats_if_unstable": 9}
    assert bounded.setup() == asked.setup()  # what the number means is unchanged


def test_inputs_are_checked_before_they_are_allocated() -> None:
    specs = [InputSpec("x", ("batch", 3, 224, 224), np.dtype(np.float32))]
    limits = AgentLimits(max_memory_bytes=64 * MiB, max_dim=1000)  # inputs up to 8 MiB
    limits.check_inputs(specs, {"x": (4, 3, 224, 224)})  # 2.3 MiB
    with pytest.raises(hwprofile.InvalidOptionError, match="\\(x 32x3x224x224 float32\\) would take 18.4 MiB, over "
                                                           "this device agent's limit of 8.0 MiB"):
        limits.check_inputs(specs, {"x": (32, 3, 224, 224)})
    with pytest.raises(hwprofile.InvalidOptionError, match="\\[1, 3, 1001, 1\\], with a dimension over this device "
                                                           "agent's limit of 1000"):
        limits.check_inputs(specs, {"x": (1, 3, 1001, 1)})


@pytest.mark.parametrize(("options", "message"), [
    ({"max_body_bytes": 0}, "max_body_bytes \\(--max-body-mb\\)` must be in \\[1, max_memory_bytes"),
    ({"max_body_bytes": 2 * MiB, "max_memory_bytes": MiB}, "max_body_bytes"),
    ({"max_threads": 0}, "`max_threads` must be >= 1"),
    ({"request_timeout_s": float("nan")}, "request_timeout_s"),
    ({"max_measure_s": 11}, "`max_measure_s` must be in \\(0, 10\\]"),
])
def test_limits_out_of_range_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match=message):
        AgentLimits(**options)  # type: ignore[arg-type]
