"""The agent's settings: the platform's (where NATS is), plus a device's defaults for `slmops agent`.

A device started by a service manager sets these in its environment (`SLMOPS_AGENT_STATE_DIR=...`);
an option given on the command line wins over them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import Settings


class AgentSettings(Settings):
    """`SLMOPS_*` environment variables of an agent process."""

    agent_identity_dir: Path | None = Field(
        default=None, description="the directory `slmops device enroll` wrote (credentials, pinned registry key)"
    )
    agent_state_dir: Path = Field(default=Path(".slmops/devices"), description="where slots and local state live")
    agent_http_port: int = Field(default=8470, ge=-1, le=65535, description="local inference port; 0 any, -1 off")
    agent_heartbeat_seconds: float = Field(default=30.0, gt=0, description="seconds between hellos")
    agent_telemetry_seconds: float = Field(default=10.0, gt=0, description="seconds per telemetry window")
    agent_download_attempts: int = Field(default=4, ge=1, description="bounded download attempts")
    agent_download_rate_limit_bps: int | None = Field(default=None, gt=0, description="bytes/s; None = unlimited")
    # The local inference endpoint's limits (services/edge_agent/http_api.py says why these defaults).
    agent_http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body; larger is refused (413) before it is read"
    )
    agent_http_max_batch: int = Field(default=64, ge=1, description="most rows per request; more is refused (413)")
    agent_http_max_concurrency: int = Field(
        default=2, ge=1, description="inferences at once; one more is refused at once (503 + Retry-After)"
    )
