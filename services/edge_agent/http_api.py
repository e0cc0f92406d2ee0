"""The device-local inference endpoint: applications on the device POST inputs, get outputs.

Loopback only by default: it serves the device's own applications, not the network. JSON in and
out keeps it usable from any language; every call is counted in the agent's telemetry window
(aggregates only: the inputs and outputs themselves are never kept).

    POST /v1/infer   {"inputs": {"input_ids": [[101, 2023, 102]], "attention_mask": [[1, 1, 1]]}}
                     -> {"digest": "<sha256 of the serving model>", "outputs": [[[0.01, ...]]]}
    GET  /v1/health  -> {"device_id": "...", "active_digest": "..." | null}
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from services.edge_agent.agent import Agent
from services.edge_agent.errors import NotReady
from services.edge_agent.runtime import NUMPY_DTYPES

MAX_BODY = 16 * 1024 * 1024


def serve(agent: Agent, *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; `server.server_address` has the bound port."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: telemetry counts requests
            return

        def do_GET(self) -> None:
            if self.path != "/v1/health":
                return self._send(404, {"error": f"no route {self.path}; try POST /v1/infer or GET /v1/health"})
            self._send(200, {"device_id": agent.config.device_id, "active_digest": agent.active_digest})

        def do_POST(self) -> None:
            if self.path != "/v1/infer":
                return self._send(404, {"error": f"no route {self.path}; try POST /v1/infer"})
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                return self._send(400, {"error": f"send a JSON body of 1..{MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(length))
                active, _ = agent.runtime.current()
                if active is None:
                    raise NotReady("no model is installed yet")
                inputs = _arrays(body["inputs"], active.session.get_inputs())
                digest, outputs = agent.infer(inputs)
            except NotReady as exc:
                return self._send(503, {"error": str(exc)})
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(400, {"error": f"bad request: {exc}"})
            except Exception as exc:  # the model failed on these inputs: the caller's data or the model
                return self._send(422, {"error": f"inference failed: {exc}"})
            self._send(200, {"digest": digest, "outputs": [o.tolist() for o in outputs]})

        def _send(self, code: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    return server


def _arrays(inputs: Any, specs: Any) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict):
        raise ValueError('"inputs" must be an object of input name -> nested list')
    types = {s.name: NUMPY_DTYPES.get(s.type, np.float32) for s in specs}
    return {name: np.asarray(value, dtype=types.get(name, np.float32)) for name, value in inputs.items()}
