"""A real device agent on loopback with small limits, the hostile models the abuse suite sends it, and a way to talk
to it below the client (raw HTTP), as an attacker holding the token would."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

import hwprofile
from hwprofile.backends.torch_cuda import TorchCudaBackend, TorchRunner
from hwprofile.registry import register_backend, unregister_backend

TOKEN = "security-token-0123456789abcdef"
REQUEST_TIMEOUT_S = 3.0  # the test agents' hard limit per measurement
BODY_TIMEOUT_S = 1.5
MEASURE_S = 0.5  # the test agents' cap on measurement seconds
LIMITS = dict(max_body_bytes=1 << 20, max_memory_bytes=2 << 30, request_timeout_s=REQUEST_TIMEOUT_S,
              body_timeout_s=BODY_TIMEOUT_S, max_measure_s=MEASURE_S)
QUICK = "min_runs=5&min_seconds=0&warmup_runs=1&warmup_seconds=0&target_rel_precision=none"


class TorchCpuBackend(TorchCudaBackend):
    """The torch-cuda backend's loading, checking and binding of .pt2 programs, run on the CPU: the agent's .pt2 path
    without a GPU. At a module's top level, so that the agent's measurement process imports it."""

    def version(self) -> str:
        return torch.__version__

    def open(self, path: Path, config: hwprofile.MeasureConfig) -> hwprofile.Runner:
        return TorchRunner(path, config, torch, device="cpu")


@pytest.fixture(scope="session")
def agent(serve_agent: Callable[..., str]) -> str:
    """An agent with small limits (1 MiB bodies, 2 GiB per measurement, 3 s per measurement, 1.5 s per body)."""
    return serve_agent(TOKEN, limits=hwprofile.remote.AgentLimits(**LIMITS))


@pytest.fixture(scope="session")
def pt2_agent(serve_agent: Callable[..., str]) -> Iterator[str]:
    """An agent started with ``allow_pt2`` that offers ``torch-cpu`` (:class:`TorchCpuBackend`), so uploads take the
    .pt2 path for real."""
    register_backend("torch-cpu")(TorchCpuBackend)
    try:
        yield serve_agent(TOKEN, limits=hwprofile.remote.AgentLimits(**LIMITS), allow_pt2=True)
    finally:
        unregister_backend("torch-cpu")


def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         token: str | None = TOKEN) -> tuple[int, Any, float]:
    """One request; returns the status, the JSON answer (``None`` if not JSON) and the seconds it took."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/octet-stream", **(headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    try:
        try:
            connection.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered before reading the whole body, and closed: read that answer
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    return response.status, answer, time.monotonic() - started


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hostile ONNX files of issue 10, by name."""
    folder = tmp_path_factory.mktemp("hostile")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v", "one"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    loop = helper.make_graph([helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body)], "loop", [x], [y],
                             [numpy_helper.from_array(np.array(10**12, np.int64), "trips"),
                              numpy_helper.from_array(np.array(True), "go")])
    huge_shape = [1, 3, 100000, 100000]
    huge = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "huge",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, huge_shape)],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, huge_shape)])
    blow_up = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                          value=numpy_helper.from_array(np.ones(1, np.float32), "value")),
         helper.make_node("Add", ["zeros", "x"], ["y"])], "blow_up", [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 100000])],
        [numpy_helper.from_array(np.array([100000, 100000], np.int64), "shape")])
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.ClearField("raw_data")
    for key, value in (("location", "../../../../../../etc/passwd"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    four = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in ("x", "y")]
    traversal = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "traversal", four[:1], four[1:],
                                  [weight])
    paths = {name: _save(graph, folder / f"{name}.onnx")
             for name, graph in (("loop", loop), ("huge", huge), ("blow_up", blow_up), ("traversal", traversal))}
    paths["small"] = hwprofile.export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8),
                                           folder / "small.onnx")
    paths["garbage"] = folder / "garbage.onnx"
    paths["garbage"].write_bytes(b"\x08\x07not a model" * 100)
    paths["oversize"] = folder / "oversize.onnx"
    paths["oversize"].write_bytes(b"\x00" * ((1 << 20) + 1))
    return paths


@pytest.fixture(scope="session")
def pt2_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``torch.export`` program (Flatten + Linear(64, 10), dynamic batch)."""
    return hwprofile.export_pt2(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8),
                                tmp_path_factory.mktemp("pt2") / "program.pt2")
