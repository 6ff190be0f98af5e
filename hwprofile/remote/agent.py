"""The device agent: a small HTTP service on the edge device that measures the ONNX files it is sent.

``GET /v1/info`` returns the device fingerprint and the usable backends; ``POST /v1/profile``
takes the model's bytes (``application/octet-stream``, options as query parameters, the names of
:class:`~hwprofile.MeasureConfig`'s fields) and returns the measurement JSON of ``nas profile
--json``. Every request needs ``Authorization: Bearer <token>`` (compared in constant time). Bodies
are counted while they stream in and refused with 413 past the limit. Measurements run one at a
time in a worker thread, so the event loop keeps answering while one runs.

Built on Starlette (ASGI) served by uvicorn: see README.md for why.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidOptionError, ProfileError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.measure import measure_local
from hwprofile.registry import available_backends, get_backend
from hwprofile.remote.errors import ERRORS, kind_of

try:
    import anyio
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as error:  # pragma: no cover - depends on the install
    raise ProfileError("The device agent needs the 'agent' extra: pip install 'nas-kd[agent]'.") from error

log = logging.getLogger(__name__)

API_VERSION = 1
DEFAULT_MAX_BODY_BYTES = 64 << 20
MIN_TOKEN_CHARS = 16


def _error(kind: str, message: str, status: int | None = None, close: bool = False) -> JSONResponse:
    """The JSON error answer of ``kind`` (see :mod:`hwprofile.remote.errors`), with the kind's status unless given."""
    status = status or ERRORS[kind][1]
    headers = {"Connection": "close"} if close else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` matches, before any body is read."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
            if not (scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)):
                response = _error("unauthorized", "Missing or wrong bearer token (Authorization: Bearer <token>).",
                                  close=True)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Agent:
    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.lock: anyio.Lock | None = None
        self.info_payload = {"api": API_VERSION, "fingerprint": device_fingerprint(), "backends": available_backends(),
                             "max_body_bytes": max_body_bytes}

    async def info(self, request: Request) -> Response:
        busy = self.lock is not None and self.lock.locked()
        return JSONResponse({**self.info_payload, "busy": busy})

    async def profile(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/octet-stream":
            return _error("invalid_option", f"Expected Content-Type application/octet-stream (the model file's bytes), "
                                            f"but got {content_type or 'none'!r}.", 415, close=True)
        try:
            config = MeasureConfig.from_query(dict(request.query_params))
        except InvalidOptionError as error:
            return _error("invalid_option", str(error), close=True)
        too_large = f"The body is over the agent's limit of {self.max_body_bytes} bytes."
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return _error("invalid_model", too_large, 413, close=True)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return _error("invalid_model", too_large, 413, close=True)
        if not body:
            return _error("invalid_model", "The body is empty: expected the bytes of an ONNX model.", 400)
        if self.lock is None:
            self.lock = anyio.Lock()
        arrived = time.time()
        async with self.lock:  # one measurement at a time, whatever the number of clients
            try:
                result = await anyio.to_thread.run_sync(self._measure, bytes(body), config)
            except ProfileError as error:
                return _error(kind_of(error), str(error))
            except Exception as error:  # a bug or a runtime crash: report it, keep serving
                log.exception("Measurement failed")
                return _error("internal", f"The measurement failed: {type(error).__name__}: {error}")
        result["agent"] = {"queued_s": result["started_at"] - arrived, "body_bytes": len(body)}
        return JSONResponse(result)

    @staticmethod
    def _measure(data: bytes, config: MeasureConfig) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="nas-agent-") as folder:
            path = Path(folder) / f"uploaded{get_backend(config.backend).suffix}"
            path.write_bytes(data)
            try:
                return measure_local(path, config).to_dict()
            except ProfileError as error:
                raise type(error)(str(error).replace(repr(str(path)), "the uploaded model")) from error


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error("not_found" if error.status_code == 404 else "invalid_option", str(error.detail), error.status_code)


def create_app(token: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The agent as an ASGI application (serve it with uvicorn, or :func:`serve`)."""
    if len(token) < MIN_TOKEN_CHARS:
        raise InvalidOptionError(f"The device agent's token has {len(token)} characters; use at least "
                                 f"{MIN_TOKEN_CHARS}, "
                                 f"e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt")
    agent = _Agent(max_body_bytes)
    routes = [Route("/v1/info", agent.info, methods=["GET"]), Route("/v1/profile", agent.profile, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(BearerAuth, token=token)],
                     exception_handlers={HTTPException: _http_error})


def serve(token: str, host: str = "127.0.0.1", port: int = 8765, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_level: str = "info") -> None:
    """Run the agent until interrupted."""
    import uvicorn

    uvicorn.run(create_app(token, max_body_bytes=max_body_bytes), host=host, port=port, log_level=log_level,
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_keep_alive=5)
