"""The device agent: a small HTTP service on the edge device that measures the models it is sent.

``GET /v1/info`` returns the device fingerprint, the usable backends and the agent's limits;
``POST /v1/profile`` takes the model's bytes (``application/octet-stream``, options as query
parameters, the names of :class:`~hwprofile.MeasureConfig`'s fields) and returns the measurement
JSON of ``nas profile --json``; with ``canary=true`` (API 2) the drift canary is measured interleaved
with the model in the same child process, and the answer carries its figures (``canary``); API 1
clients never send it. Uploads are hostile input:

- every request needs ``Authorization: Bearer <token>`` (compared in constant time); headers over
  16 KiB get 431, headers or a body that take longer than ``body_timeout_s`` to arrive 408, and a
  body over the limit 413 (declared, or counted as it streams in);
- options are bounded before the body is read (:class:`~hwprofile.remote.limits.AgentLimits`:
  threads, batch, dims; seconds lowered), and so is the backend: one the agent cannot use, or a
  ``.pt2`` one unless started with ``allow_pt2``, is refused;
- each measurement runs alone, in a child process with a memory cap that is killed at the request's
  deadline (:mod:`hwprofile.remote.sandbox`), so the agent never parses an upload and keeps serving;
- every failure is a JSON ``{"error": ..., "kind": ...}`` that never names the agent's temp folder.

Built on Starlette (ASGI) served by uvicorn: see README.md for why.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import http
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hwprofile.canary import canary_sha256
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidOptionError, ProfileError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.registry import available_backends, get_backend
from hwprofile.remote import sandbox
from hwprofile.remote.errors import ERRORS
from hwprofile.remote.limits import AgentLimits

try:
    import anyio
    import h11
    import uvicorn
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as error:  # pragma: no cover - depends on the install
    raise ProfileError("The device agent needs the 'agent' extra: pip install 'nas-kd[agent]'.") from error

log = logging.getLogger(__name__)

API_VERSION = 2  # 2: POST /v1/profile?canary=true measures the drift canary beside the model
MIN_TOKEN_CHARS = 16
MAX_HEADER_BYTES = 16 * 1024
DRAIN_S = 2.0  # after refusing a request mid-stream, read (and drop) what the client still sends, then close
SHUTDOWN_GRACE_S = 2  # on SIGTERM/SIGINT, requests still running after this are cancelled (their child killed)
PT2_REFUSED = ("This device agent refuses .pt2 uploads: torch.export archives can carry code that loading runs. "
               "Start it with --allow-pt2 to trust every token holder with that.")


def _error_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": message, "kind": kind}).encode()


def _error(kind: str, message: str, status: int | None = None, close: bool = False) -> Response:
    """The JSON error answer of ``kind`` (see :mod:`hwprofile.remote.errors`), with the kind's status unless given."""
    status = status or ERRORS[kind][1]
    headers = {"Connection": "close"} if close else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(_error_body(kind, message), status_code=status, headers=headers, media_type="application/json")


class RequestGuard:
    """ASGI middleware, before any body is read: 431 for headers over :data:`MAX_HEADER_BYTES`, then 401 unless
    ``Authorization: Bearer <token>`` matches."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = None
            if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
                response = _error("headers_too_large", f"The request's headers are over the agent's limit of "
                                                       f"{MAX_HEADER_BYTES} bytes.", close=True)
            else:
                scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
                if not (scheme.lower() == "bearer"
                        and hmac.compare_digest(credentials.strip().encode(errors="replace"), self._token)):
                    response = _error("unauthorized", "Missing or wrong bearer token (Authorization: Bearer <token>).",
                                      close=True)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Agent:
    def __init__(self, limits: AgentLimits, allow_pt2: bool) -> None:
        self.limits = limits
        self.lock: anyio.Lock | None = None
        self.pending = 0  # profile requests held now: uploading, queued or measuring
        self.backends = _offered_backends(allow_pt2)
        self.info_payload = {"api": API_VERSION, "fingerprint": device_fingerprint(), "backends": self.backends,
                             "max_body_bytes": limits.max_body_bytes, "limits": limits.describe(),
                             "canary": canary_sha256()}

    async def info(self, request: Request) -> Response:
        busy = self.lock is not None and self.lock.locked()
        return JSONResponse({**self.info_payload, "busy": busy})

    async def profile(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/octet-stream":
            return _error("invalid_option", f"Expected Content-Type application/octet-stream (the model file's bytes), "
                                            f"but got {content_type or 'none'!r}.", 415, close=True)
        query = dict(request.query_params)
        canary = query.pop("canary", "false").lower()
        try:
            if canary not in ("true", "false"):
                raise InvalidOptionError(f"Option 'canary' must be true or false, but got {canary!r}.")
            config, lowered = self.limits.bound(MeasureConfig.from_query(query))
        except InvalidOptionError as error:
            return _error("invalid_option", str(error), close=True)
        offered = self.backends.get(config.backend, {"available": False, "reason": "It was registered after the "
                                                                                   "agent started."})
        if not offered["available"]:
            return _error("backend_unavailable", f"This device agent cannot use backend {config.backend!r}: "
                                                 f"{offered['reason']}", close=True)
        if self.pending >= self.limits.max_pending:
            return _error("busy", f"The device agent holds {self.pending} requests already, its limit (nas device "
                                  f"serve --max-pending); try again shortly.", close=True)
        self.pending += 1
        try:
            body = await self._body(request)
            if isinstance(body, Response):
                return body
            if self.lock is None:
                self.lock = anyio.Lock()
            arrived = time.time()
            async with self.lock:  # one measurement at a time, whatever the number of clients
                kind, result = await self._measure(body, config, canary == "true")
        finally:
            self.pending -= 1
        if kind != "ok":
            return _error(kind, result)
        result["agent"] = {"queued_s": result["started_at"] - arrived, "body_bytes": len(body),
                           **({"lowered": lowered} if lowered else {})}
        return JSONResponse(result)

    async def _body(self, request: Request) -> bytes | Response:
        """The body, or the answer refusing it: 413 past the limit (declared or counted), 408 past the body timeout."""
        limit = self.limits.max_body_bytes
        too_large = _error("invalid_model", f"The body is over the agent's limit of {limit} bytes.", 413, close=True)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return too_large
        body = bytearray()
        try:
            with anyio.fail_after(self.limits.body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        return too_large
        except TimeoutError:
            return _error("timeout", f"The body did not arrive within {self.limits.body_timeout_s:g} s "
                                     f"(nas device serve --body-timeout).", close=True)
        except ClientDisconnect:
            return _error("bad_request", "The client went away before its body arrived.", close=True)
        if not body:
            return _error("invalid_model", "The body is empty: expected the bytes of a model file.", 400)
        return bytes(body)

    async def _measure(self, body: bytes, config: MeasureConfig, canary: bool) -> sandbox.Answer:
        """Write the upload into a private folder (mode 0700) and measure it (with the canary) in a child process."""
        backend = type(get_backend(config.backend))
        folder = Path(tempfile.mkdtemp(prefix="nas-agent-"))
        path = folder / f"model{backend.suffix}"
        try:
            await anyio.to_thread.run_sync(path.write_bytes, body)
            kind, result = await sandbox.run(sandbox.Job(path, config, backend, self.limits, canary))
        except Exception as error:  # a bug of the agent's: report it, keep serving
            log.exception("Measurement failed")
            return "internal", _scrub(f"The measurement failed: {type(error).__name__}: {error}", path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if kind == "internal":  # a bug in the measurement process, or in its backend
            log.error("Measurement failed: %s", result)
        return (kind, result) if kind == "ok" else (kind, _scrub(str(result), path))


def _offered_backends(allow_pt2: bool) -> dict[str, dict[str, Any]]:
    """:func:`available_backends`, less ``.pt2`` ones without ``allow_pt2`` and those the measurement process
    could not import (a class defined inside a function)."""
    offered = available_backends()
    for name, entry in offered.items():
        backend = type(get_backend(name))
        if backend.suffix == ".pt2" and not allow_pt2:
            offered[name] = {"available": False, "reason": " ".join([PT2_REFUSED, entry.get("reason", "")]).strip()}
            continue
        if not entry["available"]:
            continue
        try:
            pickle.dumps(backend)
        except (pickle.PicklingError, AttributeError, TypeError):
            offered[name] = {"available": False, "reason": f"{backend.__qualname__} cannot be imported by the agent's "
                                                           f"measurement process; define it at a module's top level."}
    return offered


def _scrub(message: str, path: Path) -> str:
    """The first line of ``message`` (at most 2000 characters), naming neither the upload's path nor its folder."""
    folders = (os.path.realpath(path.parent), str(path.parent))
    for text, name in ((repr(str(path)), "the uploaded model"), (str(path), "the uploaded model"),
                       *((folder, "the agent's upload folder") for folder in folders)):
        message = message.replace(text, name)
    return (message.splitlines() or [""])[0][:2000]


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error("not_found" if error.status_code == 404 else "invalid_option", str(error.detail), error.status_code)


async def _internal_error(request: Request, error: Exception) -> Response:
    return _error("internal", f"The agent failed: {type(error).__name__}.")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    await anyio.to_thread.run_sync(sandbox.start_server)
    yield


def create_app(token: str, limits: AgentLimits | None = None, *, allow_pt2: bool = False) -> Starlette:
    """The agent as an ASGI application (serve it with :func:`server`: its HTTP protocol answers what the app never
    sees, like oversized headers). ``allow_pt2`` offers ``.pt2`` backends, trusting every token holder with running
    code on this device."""
    if len(token) < MIN_TOKEN_CHARS:
        raise InvalidOptionError(f"The device agent's token has {len(token)} characters; use at least "
                                 f"{MIN_TOKEN_CHARS}, "
                                 f"e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt")
    agent = _Agent(limits or AgentLimits(), allow_pt2)
    routes = [Route("/v1/info", agent.info, methods=["GET"]), Route("/v1/profile", agent.profile, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(RequestGuard, token=token)], lifespan=_lifespan,
                     exception_handlers={HTTPException: _http_error, Exception: _internal_error})


class _Connection(h11.Connection):
    """h11's connection, keeping the status its last parsing error suggests (431 for headers over the limit)."""

    error_status = 400

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.error_status = error.error_status_hint
            raise


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering in the agent's JSON what never reaches the app (headers over the limit: 431,
    unparsable: 400, later than ``header_timeout_s``: 408), then reading what the client still sends for a moment
    before closing, so that it gets the answer rather than a connection reset."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, MAX_HEADER_BYTES)
        self._header_timeout_s = header_timeout_s
        self._header_timer: Any = None
        self._refused = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        waiting = self.conn.their_state is h11.IDLE  # for a request's headers
        if waiting and self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_late)
        elif not waiting and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self.conn.error_status == 431:
            self._refuse(431, "headers_too_large", f"The request's headers are over the agent's limit of "
                                                   f"{MAX_HEADER_BYTES} bytes.")
        else:
            self._refuse(self.conn.error_status, "bad_request", "The request is not HTTP/1.1 the agent can read.")

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(408, "timeout", f"The request's headers did not arrive within {self._header_timeout_s:g} s "
                                         f"(nas device serve --body-timeout).")

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self._refused = True
        body = _error_body(kind, message)
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(DRAIN_S, self.transport.close)


def server(token: str, host: str = "127.0.0.1", port: int = 8765, *, limits: AgentLimits | None = None,
           allow_pt2: bool = False, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
           log_level: str = "info") -> uvicorn.Server:
    """The agent's uvicorn server (``.run()`` it): the app, its HTTP protocol and a short shutdown grace."""
    if not 1 <= port <= 65535:
        raise InvalidOptionError(f"--port must be in 1..65535, but got {port}.")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise InvalidOptionError("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    for flag, file in (("--ssl-certfile", ssl_certfile), ("--ssl-keyfile", ssl_keyfile)):
        if file is not None and not Path(file).is_file():
            raise InvalidOptionError(f"{flag} {file!r} does not exist.")
    limits = limits or AgentLimits()
    if allow_pt2:
        log.warning("--allow-pt2: every holder of the token can run code on this device through a .pt2 upload.")
    config = uvicorn.Config(create_app(token, limits, allow_pt2=allow_pt2), host=host, port=port, log_level=log_level,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_keep_alive=5,
                            http=functools.partial(_Protocol, header_timeout_s=limits.body_timeout_s),
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    return uvicorn.Server(config)


def serve(token: str, host: str = "127.0.0.1", port: int = 8765, **options: Any) -> None:
    """Run the agent until interrupted (options: those of :func:`server`)."""
    server(token, host, port, **options).run()
