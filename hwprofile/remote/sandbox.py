"""One measurement in a process of its own that the device agent can kill: an upload is never opened by the agent.

Each measurement runs in a fresh child forked by a multiprocessing *forkserver*: an interpreter started
once, which has imported hwprofile and nothing of the agent's (no CUDA context, event loop or thread),
so a child starts in milliseconds with nothing left over from the request before. The child's data
segment is capped with ``RLIMIT_DATA`` (every private writable mapping: the heap, numpy arrays, ONNX
Runtime's arena; unlike ``RLIMIT_AS`` it leaves alone the address space CUDA reserves), it writes
temporary files only into the request's private folder, ``torch.load`` is forced to ``weights_only``,
and it answers in JSON (nothing it sends is unpickled). It checks the model's inputs against the
limits before allocating them, then measures. The agent kills it at the request's deadline, or when
the request is cancelled (the agent stopping).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio

from hwprofile.config import MeasureConfig
from hwprofile.errors import ProfileError
from hwprofile.inputs import resolve_shapes
from hwprofile.measure import measure_local
from hwprofile.registry import Backend, get_backend, register_backend
from hwprofile.remote.errors import kind_of
from hwprofile.remote.limits import MiB, AgentLimits

_CONTEXT = multiprocessing.get_context("forkserver")
_OUT_OF_MEMORY = ("failed to allocate", "bad_alloc", "out of memory", "cannot allocate memory")
MAX_ANSWER_BYTES = 16 * MiB

Answer = tuple[str, Any]  # ("ok", the measurement's dict) or (an error kind of hwprofile.remote.errors, its message)


@dataclass(frozen=True)
class Job:
    """One measurement: the uploaded model, the config already bounded, the backend class to measure with
    (registered in the child under ``config.backend``; it must be importable), the limits, and whether the drift
    canary is measured beside the model."""

    path: Path
    config: MeasureConfig
    backend: type[Backend]
    limits: AgentLimits
    canary: bool = False


def start_server() -> None:
    """Start the forkserver and let it import hwprofile (seconds, once per process), so no request waits for it.

    It also imports the modules that the names of the agent's main script come from (``nas``'s ``nas.cli``): each
    child runs that script again, as multiprocessing does to find what it defines, which is then instant.
    """
    main = vars(sys.modules["__main__"]).values()
    modules = {value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
               for value in main}
    _CONTEXT.set_forkserver_preload([*sorted(m for m in modules if m in sys.modules and m != "__main__"), __name__])
    process = _CONTEXT.Process(target=_nothing, daemon=True)
    process.start()
    process.join()


async def run(job: Job) -> Answer:
    """Measure ``job`` in a child process, killed at ``job.limits.request_timeout_s`` or if this is cancelled."""
    reader, writer = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(job, writer), daemon=True, name="nas-agent-measurement")
    try:
        await anyio.to_thread.run_sync(process.start)
        writer.close()  # the child holds the other copy: its exit is the end of the pipe
        with anyio.move_on_after(job.limits.request_timeout_s):
            await anyio.wait_readable(reader.fileno())
            try:
                kind, result = json.loads(reader.recv_bytes(MAX_ANSWER_BYTES))
                return kind, result
            except EOFError:  # the child died without answering
                await anyio.to_thread.run_sync(process.join)
                return _death(process.exitcode, job.limits)
        return "time_limit", (f"The measurement of the uploaded model did not finish within this device agent's limit "
                              f"of {job.limits.request_timeout_s:g} s (nas device serve --request-timeout); it was "
                              f"stopped.")
    finally:
        writer.close()
        reader.close()
        if process.pid is not None:
            if process.exitcode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(process.join)
            process.close()


def _child(job: Job, answer: Connection) -> None:
    limit = job.limits.max_memory_bytes
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    tempfile.tempdir = str(job.path.parent)
    try:
        result: Answer = "ok", _measure(job)
    except Exception as error:  # every failure is an answer: the model's, the limits', or a bug
        result = _failure(error, job.limits)
    answer.send_bytes(json.dumps(result, default=str).encode())  # a plugin's odd values become text


def _measure(job: Job) -> dict[str, Any]:
    register_backend(job.config.backend)(job.backend)
    specs = get_backend(job.config.backend).input_specs(job.path)
    job.limits.check_inputs(specs, resolve_shapes(specs, job.config.batch, job.config.dims_dict))
    return measure_local(job.path, job.config, canary=job.canary).to_dict()


def _failure(error: Exception, limits: AgentLimits) -> Answer:
    chain: list[BaseException] = [error]  # the error and what caused it (an ORT failure inside an InvalidModelError)
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 10:
        chain.append(cause)
    if any(isinstance(e, MemoryError) or any(word in str(e).lower() for word in _OUT_OF_MEMORY) for e in chain):
        return "memory_limit", (f"The uploaded model needs more memory than this device agent allows a measurement "
                                f"({limits.max_memory_bytes // MiB} MiB, nas device serve --max-memory-mb) or than "
                                f"the device has: {type(error).__name__}: {error}")
    if isinstance(error, ProfileError):
        return kind_of(error), str(error)
    return "internal", f"The measurement failed: {type(error).__name__}: {error}"


def _death(exitcode: int | None, limits: AgentLimits) -> Answer:
    if exitcode == -signal.SIGKILL:
        return "memory_limit", (f"The measurement process was killed (SIGKILL, as the kernel's OOM killer does): the "
                                f"uploaded model needs more memory than the device has free (a measurement may use "
                                f"{limits.max_memory_bytes // MiB} MiB, nas device serve --max-memory-mb).")
    if exitcode is not None and exitcode < 0:
        return "invalid_model", f"The runtime crashed on the uploaded model ({signal.Signals(-exitcode).name})."
    return "internal", f"The measurement process exited with status {exitcode} without an answer."


def _nothing() -> None:
    """A child that only proves the forkserver is up."""


__all__ = ["Answer", "Job", "run", "start_server"]
