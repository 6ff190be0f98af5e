"""The client of a device agent (``nas device serve``): send an ONNX file, get its measurement back.

Standard library only (http.client), so a searching machine needs no web framework.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from hwprofile.canary import canary_sha256
from hwprofile.config import MeasureConfig
from hwprofile.errors import AgentError, BackendUnavailableError, InvalidModelError, InvalidOptionError
from hwprofile.measurement import Measurement
from hwprofile.remote.errors import error_class

TOKEN_ENV = "NAS_DEVICE_TOKEN"
MAX_BACKOFF_S = 5.0
MAX_TOKEN_BYTES = 4096
CANARY_API = 2  # the first agent API that measures the drift canary beside a model (``canary=true``)


def read_token(token_file: str | Path | None = None) -> str:
    """The bearer token: the first line of ``token_file``, else ``$NAS_DEVICE_TOKEN``."""
    if token_file is not None:
        source = f"the token file {str(token_file)!r}"
        try:
            with open(token_file, "rb") as handle:
                line = handle.readline(MAX_TOKEN_BYTES + 1)
        except OSError as error:
            raise InvalidOptionError(f"Cannot read the token file {str(token_file)!r}: {error.strerror}.") from None
        if len(line) > MAX_TOKEN_BYTES:
            raise InvalidOptionError(f"The first line of {source} is over {MAX_TOKEN_BYTES} bytes; it should hold "
                                     f"the token alone.")
        token = line.decode(errors="replace").strip()
        if not token:
            raise InvalidOptionError(f"The token file {str(token_file)!r} is empty (its first line holds the token).")
    elif token := os.environ.get(TOKEN_ENV, "").strip():
        source = f"${TOKEN_ENV}"
    else:
        raise InvalidOptionError(f"No device token: give --token-file FILE or set ${TOKEN_ENV}.")
    if not (token.isascii() and token.isprintable()):
        raise InvalidOptionError(f"The token from {source} has characters an HTTP header cannot carry; use printable "
                                 f"ASCII, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'.")
    return token


class _Retryable(Exception):
    pass


class DeviceClient:
    """Talks to one device agent, with a connect timeout, an answer timeout and retries on connection errors.

    ``timeout_s`` bounds the wait for an answer (a measurement, or a TensorRT engine build, can take
    minutes); connection failures are retried ``retries`` times with exponential backoff (capped at 5 s).
    """

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 600.0, connect_timeout_s: float = 5.0,
                 retries: int = 3, backoff_s: float = 0.5) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # not a number, or over 65535
            port = 0
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or port == 0:
            raise InvalidOptionError(f"A device agent address must look like http://HOST:PORT (PORT in 1..65535), "
                                     f"but got {url!r}.")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, port
        self.token = token if token is not None else read_token()
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: the device fingerprint, its backends and the agent's body limit (fetched once)."""
        if self._info is None:
            info = self._request("GET", "/v1/info")
            if not _is_agent_info(info):
                raise self._unexpected("GET /v1/info", info, "a device agent's info (an object with api, fingerprint "
                                                             "and backends)")
            self._info = info
        return self._info

    def fingerprint(self) -> dict[str, Any]:
        return self.info()["fingerprint"]

    def backend_version(self, backend: str) -> str:
        """The version of ``backend`` on the device; raises if the device cannot use it."""
        backends = self.info()["backends"]
        entry = backends.get(backend) or {"available": False, "reason": "the agent does not know it."}
        if not entry["available"]:
            usable = [name for name, e in backends.items() if e["available"]]
            raise BackendUnavailableError(f"The device agent {self.url} cannot use backend {backend!r}: "
                                          f"{entry.get('reason')} Usable there: {', '.join(usable) or 'none'}.")
        return str(entry["version"])

    def profile(self, model_path: str | Path, config: MeasureConfig = MeasureConfig(), *,
                canary: bool = False) -> Measurement:
        """``POST /v1/profile`` with the model's bytes; the agent measures it (one at a time) and answers. With
        ``canary``, the agent measures the drift canary interleaved with the model in the same request
        (agents of API 2 on; an older one is an :class:`AgentError` that says so)."""
        path = Path(model_path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InvalidModelError(f"Model {str(path)!r} cannot be read: {error.strerror}.") from None
        limit = self.info().get("max_body_bytes")
        if limit is not None and len(data) > limit:
            raise InvalidModelError(f"Model {str(path)!r} has {len(data)} bytes, over the device agent's limit of "
                                    f"{limit} bytes (nas device serve --max-body-mb).")
        if canary:
            self._check_canary()
        query = {**config.to_query(), **({"canary": "true"} if canary else {})}
        payload = self._request("POST", "/v1/profile?" + urlencode(query), data,
                                {"Content-Type": "application/octet-stream"})
        try:
            measurement = Measurement.from_dict(payload, target=self.url)
        except (KeyError, TypeError, ValueError, AttributeError):
            measurement = None
        if measurement is None or canary and (measurement.canary is None
                                              or measurement.canary.model_sha256 != canary_sha256()):
            expected = "a measurement with the canary's figures" if canary else "a measurement"
            raise self._unexpected("POST /v1/profile", payload, f"{expected} (the JSON of nas profile --json)")
        return measurement

    def _check_canary(self) -> None:
        """Raise :class:`AgentError` unless the agent measures the drift canary, and the same canary as this client."""
        info = self.info()
        theirs = info.get("canary")
        if theirs is None:
            raise AgentError(f"The device agent {self.url} speaks API {info['api']}, which cannot measure the drift "
                             f"canary beside a model (API {CANARY_API} and later can): update nas-kd on the device "
                             f"(pip install -U 'nas-kd[agent]') and restart `nas device serve`.")
        if theirs != canary_sha256():
            raise AgentError(f"The device agent {self.url} builds another drift canary (sha256 {str(theirs)[:12]}) "
                             f"than this client ({canary_sha256()[:12]}): install the same nas-kd version on both.")

    def _unexpected(self, request: str, payload: Any, expected: str) -> AgentError:
        """The error for an answer that is JSON but not what ``request`` returns."""
        return AgentError(f"The device agent {self.url} answered {request} with {json.dumps(payload)[:200]}, not "
                          f"{expected}: is `nas device serve` running there?")

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        for attempt in range(self.retries + 1):
            try:
                status, data = self._once(method, path, body, headers)
            except _Retryable as error:
                if attempt < self.retries:
                    time.sleep(min(self.backoff_s * 2 ** attempt, MAX_BACKOFF_S))
                    continue
                raise AgentError(f"The device agent {self.url} is unreachable after {self.retries + 1} attempt(s): "
                                 f"{error}. Is `nas device serve` running there, and the address right?") from None
            if status in (502, 503, 504) and attempt < self.retries:
                time.sleep(min(self.backoff_s * 2 ** attempt, MAX_BACKOFF_S))
                continue
            return self._answer(status, data)
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = self._connection(self._host, self._port, timeout=self.connect_timeout_s)
        try:
            try:
                connection.connect()
            except ssl.SSLError as error:
                raise AgentError(f"The device agent {self.url} failed the TLS handshake: {error.reason or error} (for a "
                                 f"self-signed certificate, set $SSL_CERT_FILE to it).") from None
            except OSError as error:
                raise _Retryable(error) from None
            connection.sock.settimeout(self.timeout_s)
            try:
                connection.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent answered early (401, 413) and closed: read that answer below
            response = connection.getresponse()
            return response.status, response.read()
        except TimeoutError:
            raise AgentError(f"The device agent {self.url} sent no answer within {self.timeout_s:g} s.") from None
        except (ConnectionError, http.client.HTTPException) as error:
            raise _Retryable(error) from None
        finally:
            connection.close()

    def _answer(self, status: int, data: bytes) -> Any:
        try:
            payload = json.loads(data)
        except ValueError:
            raise AgentError(f"The device agent {self.url} answered HTTP {status} with something not JSON: "
                             f"{data[:200]!r}") from None
        if status == 200:
            return payload
        message = payload.get("error", data[:200].decode(errors="replace")) if isinstance(payload, dict) else payload
        if status == 401:
            raise AgentError(f"The device agent {self.url} rejected the token (HTTP 401): check --token-file "
                             f"or ${TOKEN_ENV}.")
        kind = payload.get("kind") if isinstance(payload, dict) else None
        raise error_class(kind)(f"Device agent {self.url} (HTTP {status}): {message}")


def _is_agent_info(info: Any) -> bool:
    """Whether ``info`` is what an agent's ``GET /v1/info`` returns: its API version, fingerprint, backends each
    usable (with a version) or not, and (API 2 on) the sha256 of the drift canary it measures."""
    if not (isinstance(info, dict) and isinstance(info.get("api"), int) and isinstance(info.get("fingerprint"), dict)
            and isinstance(info.get("backends"), dict) and isinstance(info.get("canary", ""), str)):
        return False
    return all(isinstance(entry, dict) and (entry.get("available") is False
                                            or entry.get("available") is True and "version" in entry)
               for entry in info["backends"].values())


def measure_remote(model_path: str | Path, target_url: str, token: str | None = None,
                   config: MeasureConfig = MeasureConfig()) -> Measurement:
    """One measurement on the agent at ``target_url`` (token: given, else ``$NAS_DEVICE_TOKEN``)."""
    return DeviceClient(target_url, token).profile(model_path, config)
