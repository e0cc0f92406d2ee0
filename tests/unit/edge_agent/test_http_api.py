"""The agent's loopback inference endpoint (services/edge_agent/http_api.py) on a real HTTP server.

Each test starts the endpoint on a free loopback port in front of a real agent serving the tiny
model, with small limits, and talks to it with `http.client`. The body-size refusal is proven by
declaring a large body and sending none of it: the answer can only come before the body is read.
Saturation is made deterministic with an inference that waits on an event, never on a clock.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from samples.tiny import write_sample
from services.edge_agent.adapters.memory import MemoryLink
from services.edge_agent.agent import Agent, AgentConfig
from services.edge_agent.capabilities import detect
from services.edge_agent.desired import AppConfig
from services.edge_agent.http_api import HttpLimits, serve
from services.edge_agent.runtime import LoadedModel
from services.edge_agent.settings import AgentSettings
from shared.digests import sha256_file
from shared.messages.common import config_digest
from tests.unit.edge_agent.conftest import DEVICE

LIMITS = HttpLimits(max_body_bytes=4096, max_batch=4, max_concurrency=1)
SAFETY = 30.0  # seconds before a hung test fails instead of hanging; never what a test asserts


def rows(n: int, tokens: int = 4) -> dict[str, Any]:
    return {"inputs": {"input_ids": [[5] * tokens] * n, "attention_mask": [[1] * tokens] * n}}


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    link = MemoryLink(DEVICE)
    config = AgentConfig(
        device_id=DEVICE, device_class="rpi5", registry_key_pem=link.public_key_pem, state_dir=tmp_path / "state"
    )
    agent = Agent(config, link=link, capabilities=detect())
    model, _ = write_sample(tmp_path / "model", seed=1)
    digest, _ = sha256_file(model)
    agent.runtime.swap(LoadedModel(model, digest=digest), shadow=None)
    return agent


@pytest.fixture
def server(agent: Agent) -> Iterator[ThreadingHTTPServer]:
    server = serve(agent, port=0, limits=LIMITS)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def connect(server: ThreadingHTTPServer) -> http.client.HTTPConnection:
    host, port = server.server_address[:2]
    return http.client.HTTPConnection(str(host), int(port), timeout=SAFETY)


def post(
    server: ThreadingHTTPServer, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = connect(server)
    try:
        conn.request("POST", "/v1/infer", body=data, headers={"Content-Type": "application/json"} | (headers or {}))
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response
    finally:
        conn.close()


def test_a_request_within_the_limits_is_answered(server: ThreadingHTTPServer, agent: Agent) -> None:
    status, doc, _ = post(server, rows(LIMITS.max_batch))
    serving, _ = agent.runtime.current()
    assert status == 200 and serving is not None and doc["digest"] == serving.digest
    assert np.asarray(doc["outputs"][0]).shape == (LIMITS.max_batch, 64)


def get(
    server: ThreadingHTTPServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = connect(server)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None, response
    finally:
        conn.close()


def test_the_settings_are_an_empty_object_with_no_digest_when_there_are_none(server: ThreadingHTTPServer) -> None:
    status, doc, response = get(server, "/v1/config")
    assert (status, doc, response.getheader("ETag")) == (200, {}, None)
    assert get(server, "/v1/health")[1]["config_digest"] is None


def test_the_settings_serving_are_served_with_their_digest(server: ThreadingHTTPServer, agent: Agent) -> None:
    settings = {"lang": "de", "labels": ["ja", "nein"], "city": "Köln"}
    agent.runtime.configure(AppConfig.of(settings))
    status, doc, response = get(server, "/v1/config")
    assert (status, doc, response.getheader("ETag")) == (200, settings, f'"{config_digest(settings)}"')
    assert get(server, "/v1/health")[1]["config_digest"] == config_digest(settings)
    assert post(server, rows(1))[1]["config_digest"] == config_digest(settings)


def test_settings_unchanged_since_the_last_read_are_304(server: ThreadingHTTPServer, agent: Agent) -> None:
    agent.runtime.configure(AppConfig.of({"lang": "de"}))
    etag = f'"{config_digest({"lang": "de"})}"'
    assert get(server, "/v1/config", {"If-None-Match": etag})[0] == 304
    agent.runtime.configure(AppConfig.of({"lang": "en"}))
    status, doc, _ = get(server, "/v1/config", {"If-None-Match": etag})
    assert (status, doc) == (200, {"lang": "en"})


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: ThreadingHTTPServer) -> None:
    conn = connect(server)
    try:
        conn.putrequest("POST", "/v1/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(LIMITS.max_body_bytes + 1))
        conn.endheaders()  # not one byte of the body is sent: only a refusal up front can answer
        response = conn.getresponse()
        doc = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413 and response.getheader("Connection") == "close"
    assert f"over the limit of {LIMITS.max_body_bytes}" in doc["error"]
    assert "SLMOPS_AGENT_HTTP_MAX_BODY_BYTES" in doc["error"]


def test_a_body_without_a_length_is_refused(server: ThreadingHTTPServer) -> None:
    conn = connect(server)
    try:
        conn.putrequest("POST", "/v1/infer")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        response = conn.getresponse()
        doc = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 411 and "Content-Length" in doc["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"inputs": {"input_ids": [[1, 2', "malformed JSON"),
        (b"\xff\xfe not utf-8", "malformed JSON"),
        (b"[" * 3000, "malformed JSON"),  # deeper than the parser recurses, within the size limit
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'{"inputs": {"input_ids": 7}}', "'input_ids' must be a non-empty list of rows"),
        (b'{"inputs": {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1], [1]]}}', "bad inputs"),
        (b'{"inputs": {"input_ids": [[1, 2]], "attention_mask": [[1, 1], [1, 1]]}}', "same number of rows"),
        (b'{"inputs": {"input_ids": [["a", "b"]], "attention_mask": [[1, 1]]}}', "bad inputs"),
    ],
)
def test_a_malformed_body_is_400_with_the_reason_and_frees_its_slot(
    server: ThreadingHTTPServer, body: bytes, reason: str
) -> None:
    status, doc, _ = post(server, body)
    assert status == 400 and reason in doc["error"], doc
    assert post(server, rows(1))[0] == 200, "the refused request gave its only slot back"


def test_a_batch_over_the_limit_is_refused_with_the_reason(server: ThreadingHTTPServer) -> None:
    status, doc, _ = post(server, rows(LIMITS.max_batch + 1, tokens=2))
    assert status == 413
    assert f"a batch of {LIMITS.max_batch + 1} rows is over the limit of {LIMITS.max_batch}" in doc["error"]
    assert "SLMOPS_AGENT_HTTP_MAX_BATCH" in doc["error"]


def test_a_request_beyond_the_concurrency_limit_is_turned_away_with_retry_after(
    server: ThreadingHTTPServer, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    infer = agent.infer

    def held_infer(inputs: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray]]:
        entered.set()
        release.wait(SAFETY)
        return infer(inputs)

    monkeypatch.setattr(agent, "infer", held_infer)
    first: list[int] = []
    running = threading.Thread(target=lambda: first.append(post(server, rows(1))[0]))
    running.start()
    try:
        assert entered.wait(SAFETY), "the first request never reached inference"
        status, doc, response = post(server, rows(1))
        assert status == 503 and response.getheader("Retry-After") == str(LIMITS.retry_after_seconds)
        assert "SLMOPS_AGENT_HTTP_MAX_CONCURRENCY" in doc["error"]
        health = connect(server)
        health.request("GET", "/v1/health")
        assert health.getresponse().status == 200, "health is never limited"
        health.close()
    finally:
        release.set()
        running.join(SAFETY)
    assert first == [200], "the request holding the slot completes"
    assert post(server, rows(1))[0] == 200, "and its slot is free again"


def test_the_limits_come_from_the_agent_s_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMOPS_AGENT_HTTP_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("SLMOPS_AGENT_HTTP_MAX_BATCH", "8")
    monkeypatch.setenv("SLMOPS_AGENT_HTTP_MAX_CONCURRENCY", "3")
    limits = HttpLimits.from_settings(AgentSettings())
    assert (limits.max_body_bytes, limits.max_batch, limits.max_concurrency) == (65536, 8, 3)
    defaults = HttpLimits()
    assert (defaults.max_body_bytes, defaults.max_batch, defaults.max_concurrency) == (1024 * 1024, 64, 2)
