"""The device-local inference endpoint: applications on the device POST inputs, get outputs.

Loopback only by default: it serves the device's own applications, not the network. JSON in and
out keeps it usable from any language; every call is counted in the agent's telemetry window
(aggregates only: the inputs and outputs themselves are never kept).

    POST /v1/infer   {"inputs": {"input_ids": [[101, 2023, 102]], "attention_mask": [[1, 1, 1]]}}
                     -> {"digest": "<sha256 of the serving model>", "config_digest": "..." | null,
                         "outputs": [[[0.01, ...]]]}
    GET  /v1/health  -> {"device_id": "...", "active_digest": "..." | null, "config_digest": "..." | null}
    GET  /v1/config  -> the application settings serving with the active model: the JSON object of
                        the desired state's `config`, `{}` when it has none (or no model is
                        installed yet); header `ETag: "<config_digest>"` when there are settings,
                        and `If-None-Match` with it answers 304, so an application can poll cheaply.

`config_digest` is the sha256 of the settings' canonical JSON (sorted keys, no spaces, UTF-8), null
when there are none: `{}` from `/v1/config` with a null digest is "no settings", with a digest it is
settings that are an empty object. Applications read settings from here, never from the slots on
disk: which slot serves is the agent's to say, and it changes the settings with the model.

**Limits** (`HttpLimits`, from `SLMOPS_AGENT_HTTP_*`): a device has little memory, and JSON costs
far more once parsed than on the wire (each number becomes a Python object of ~30 bytes, from as
little as 2 bytes of text), so what one request may make the agent hold is bounded up front:

* body: at most `max_body_bytes` (default 1 MiB: a batch of 64 rows of 512 token ids and their
  mask is ~0.4 MB; at most ~16 MB of Python objects once parsed). The size is checked from
  `Content-Length` before a byte of the body is read: larger is 413, no length (or a chunked
  body) is 411, and the connection is closed rather than drained.
* batch: at most `max_batch` rows (default 64) in every input, all inputs with the same number
  of rows; more is 413 (split the batch), ragged or mismatched rows are 400.
* concurrency: at most `max_concurrency` requests (default 2) are read, parsed and inferred at
  once; one more is refused at once with 503 and `Retry-After`, not queued: a queue would only
  hide the overload from the caller and hold more bodies in memory. The slot is taken before
  the body is read, so at most that many bodies are ever in memory. Health is never limited.
* a client that stalls is dropped after `read_timeout_seconds` (a slot is never held forever).

Errors are JSON `{"error": "<reason>"}`: malformed JSON or a body of the wrong shape is 400, no
model yet 503, a model that fails on the inputs 422.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from services.edge_agent.agent import Agent
from services.edge_agent.errors import NotReady
from services.edge_agent.runtime import NUMPY_DTYPES
from services.edge_agent.settings import AgentSettings
from shared.errors import CallerError

_FIELDS = AgentSettings.model_fields


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """What one request, and all requests at once, may cost the device (the module docstring says why)."""

    max_body_bytes: int = _FIELDS["agent_http_max_body_bytes"].default
    max_batch: int = _FIELDS["agent_http_max_batch"].default
    max_concurrency: int = _FIELDS["agent_http_max_concurrency"].default
    retry_after_seconds: int = 1
    read_timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> HttpLimits:
        return cls(
            max_body_bytes=settings.agent_http_max_body_bytes,
            max_batch=settings.agent_http_max_batch,
            max_concurrency=settings.agent_http_max_concurrency,
        )


DEFAULT_LIMITS = HttpLimits()


class _Refused(CallerError):
    """A request the endpoint answers with an error status; `close` when the body was left unread."""

    def __init__(self, status: int, reason: str, *, close: bool = False, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close
        self.headers = headers or {}


def serve(
    agent: Agent, *, host: str = "127.0.0.1", port: int = 0, limits: HttpLimits = DEFAULT_LIMITS
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; `server.server_address` has the bound port."""
    slots = threading.BoundedSemaphore(limits.max_concurrency)

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.read_timeout_seconds  # the socket's: a stalled client is dropped

        def log_message(self, format: str, *args: Any) -> None:  # quiet: telemetry counts requests
            return

        def do_GET(self) -> None:
            if self.path == "/v1/config":
                return self._config()
            if self.path != "/v1/health":
                return self._send(
                    404, {"error": f"no route {self.path}; try POST /v1/infer, GET /v1/health or GET /v1/config"}
                )
            self._send(
                200,
                {
                    "device_id": agent.config.device_id,
                    "active_digest": agent.active_digest,
                    "config_digest": agent.app_config.digest,
                },
            )

        def _config(self) -> None:
            config = agent.app_config
            if config.digest is None:
                return self._send(200, {})
            etag = f'"{config.digest}"'
            if etag in (t.strip() for t in self.headers.get("If-None-Match", "").split(",")):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._send(200, dict(config.values or {}), {"ETag": etag})

        def do_POST(self) -> None:
            if self.path != "/v1/infer":
                self.close_connection = True  # the body, if any, is not read
                return self._send(404, {"error": f"no route {self.path}; try POST /v1/infer"})
            try:
                length = _content_length(self.headers, limits)
                if not slots.acquire(blocking=False):
                    raise _Refused(
                        503,
                        f"busy: {limits.max_concurrency} inferences already running "
                        "(SLMOPS_AGENT_HTTP_MAX_CONCURRENCY); retry shortly",
                        close=True,
                        headers={"Retry-After": str(limits.retry_after_seconds)},
                    )
                try:
                    self._send(200, self._infer(length))
                finally:
                    slots.release()
            except _Refused as refused:
                if refused.close:
                    self.close_connection = True
                self._send(refused.status, {"error": refused.reason}, refused.headers)

        def _infer(self, length: int) -> dict[str, Any]:
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                raise _Refused(408, "the body did not arrive in time", close=True) from None
            if len(raw) < length:
                raise _Refused(400, f"the body ended after {len(raw)} of {length} bytes", close=True)
            inputs = _parse(raw, limits)
            active, _ = agent.runtime.current()
            if active is None:
                raise _Refused(503, "no model is installed yet")
            config = agent.app_config  # the settings serving as the request arrives
            try:
                arrays = _arrays(inputs, active.session.get_inputs())
                digest, outputs = agent.infer(arrays)
            except NotReady as exc:
                raise _Refused(503, str(exc)) from None
            except (ValueError, TypeError, OverflowError) as exc:
                raise _Refused(400, f"bad inputs: {exc}") from None
            except Exception as exc:  # the model failed on these inputs: the caller's data or the model
                raise _Refused(422, f"inference failed: {exc}") from None
            return {"digest": digest, "config_digest": config.digest, "outputs": [o.tolist() for o in outputs]}

        def _send(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    return server


def _content_length(headers: Any, limits: HttpLimits) -> int:
    """The body's declared size, refused unless it is present, sane and within the limit (nothing read yet)."""
    if headers.get("Transfer-Encoding"):
        raise _Refused(411, "send the body with a Content-Length (chunked bodies are not accepted)", close=True)
    declared = headers.get("Content-Length")
    if declared is None:
        raise _Refused(411, "send a Content-Length with the JSON body", close=True)
    try:
        length = int(declared)
    except ValueError:
        raise _Refused(400, f"Content-Length {declared!r} is not a number", close=True) from None
    if length <= 0:
        raise _Refused(400, 'send a JSON body: {"inputs": {name: rows}}', close=True)
    if length > limits.max_body_bytes:
        raise _Refused(
            413,
            f"the body is {length} bytes, over the limit of {limits.max_body_bytes} "
            "(SLMOPS_AGENT_HTTP_MAX_BODY_BYTES); send fewer rows per request",
            close=True,
        )
    return length


def _parse(raw: bytes, limits: HttpLimits) -> dict[str, Any]:
    """The request's `inputs`, checked for shape and batch size before any array is built."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise _Refused(400, f"malformed JSON: {str(exc) or type(exc).__name__}") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict) or not body["inputs"]:
        raise _Refused(400, 'the body must be a JSON object {"inputs": {input name: list of rows}}')
    inputs: dict[str, Any] = body["inputs"]
    rows: dict[str, int] = {}
    for name, value in inputs.items():
        if not isinstance(value, list) or not value:
            raise _Refused(400, f"input {name!r} must be a non-empty list of rows (a batch)")
        rows[name] = len(value)
    if (largest := max(rows.values())) > limits.max_batch:
        raise _Refused(
            413,
            f"a batch of {largest} rows is over the limit of {limits.max_batch} (SLMOPS_AGENT_HTTP_MAX_BATCH); "
            "split it into smaller requests",
        )
    if len(set(rows.values())) > 1:
        raise _Refused(400, f"every input must have the same number of rows; got {rows}")
    return inputs


def _arrays(inputs: dict[str, Any], specs: Any) -> dict[str, np.ndarray]:
    types = {s.name: NUMPY_DTYPES.get(s.type, np.float32) for s in specs}
    return {name: np.asarray(value, dtype=types.get(name, np.float32)) for name, value in inputs.items()}
