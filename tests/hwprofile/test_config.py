from __future__ import annotations

import pytest

import hwprofile


def test_config_round_trips_through_query_strings() -> None:
    config = hwprofile.MeasureConfig(threads=2, batch=3, dims={"seq": 7}, spinning=False, target_rel_precision=None,
                                     precision="fp16", min_seconds=0.5)
    assert hwprofile.MeasureConfig.from_query(config.to_query()) == config
    assert config.dims_dict == {"seq": 7} and config.setup()["provider"] == "cpu"


@pytest.mark.parametrize(("query", "message"), [
    ({"thread": "2"}, "Unknown option\\(s\\) 'thread'; known: threads"),
    ({"threads": "two"}, "Option 'threads' must be int, but got 'two'"),
    ({"spinning": "maybe"}, "Option 'spinning' must be bool"),
    ({"dims": "seq"}, "Option 'dims' must be dims like 'seq=128"),
    ({"min_seconds": "nan"}, "Option 'min_seconds' must be float"),
    ({"batch": "0"}, "`threads` and `batch` must be >= 1"),
    ({"backend": "onnx"}, "Unknown backend 'onnx'; known backends: ort, tensorrt, torch-cuda"),
    ({"backend": "tensorrt", "provider": "cuda"}, "`provider` selects an ONNX Runtime execution provider"),
])
def test_bad_query_options_are_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match=message):
        hwprofile.MeasureConfig.from_query(query)
