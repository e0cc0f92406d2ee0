"""Process settings: one `Settings` per process, read from `SLMOPS_*` environment variables.

Every URL, port and credential lives here so that the same services run unchanged against the
embedded stack (`slmops up`) and against docker-compose's NATS and MinIO. When no environment
variable names the servers, the CLI falls back to the addresses the running embedded stack wrote
to `<home>/stack.json`, so `slmops model list` just works after `slmops up` in another terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"
SettingsT = TypeVar("SettingsT", bound="Settings")


class Settings(BaseSettings):
    """Everything a process needs to reach the platform; immutable once loaded.

    A service with settings of its own subclasses this in `services/<service>/settings.py`; the
    environment prefix stays `SLMOPS_` for every field.
    """

    model_config = SettingsConfigDict(env_prefix="SLMOPS_", frozen=True, extra="ignore")

    home: Path = Field(default=Path(".slmops"), description="Embedded-stack state: NATS data, keys, logs.")
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: Path | None = Field(
        default=None,
        description="This process's NATS credentials (.creds); default: the operator's of a local "
        "embedded stack, <home>/auth/creds/operator-cli.creds, when it exists.",
    )

    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "slmops"
    s3_secret_key: str = "slmops-secret"
    s3_public_endpoint: str | None = Field(
        default=None, description="Host:port devices use for presigned URLs, if not s3_endpoint (e.g. outside compose)."
    )
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_bucket: str = "slmops-artifacts"
    signing_key_path: Path | None = Field(
        default=None, description="ed25519 private key (PEM); default <home>/keys/registry-ed25519.pem"
    )

    otel_exporter: Literal["file", "otlp", "none"] = "file"
    otlp_endpoint: str = "http://127.0.0.1:4318"

    ack_wait_seconds: float = Field(default=30.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)
    log_level: str = "INFO"

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key_path or self.home / "keys" / "registry-ed25519.pem"

    @property
    def auth_dir(self) -> Path:
        """The embedded stack's trust root (`shared.auth.authority`): keys and issued credentials."""
        return self.home / "auth"

    @property
    def credentials_file(self) -> Path | None:
        """The credentials this process connects with: `nats_creds`, else the local operator's."""
        if self.nats_creds is not None:
            return self.nats_creds
        default = self.auth_dir / "creds" / "operator-cli.creds"
        return default if not self.nats_user and default.exists() else None

    @property
    def traces_file(self) -> Path:
        return self.home / "traces.jsonl"


@overload
def load_settings(**overrides: Any) -> Settings: ...
@overload
def load_settings(cls: type[SettingsT], /, **overrides: Any) -> SettingsT: ...
def load_settings(cls: type[Settings] = Settings, /, **overrides: Any) -> Settings:
    """Load settings from the environment, filling server addresses from a running embedded stack.

    Args:
        cls: `Settings` or a service's subclass of it (which adds that service's own fields).
        **overrides: explicit values (e.g. from CLI options) that beat everything else.
    """
    base = cls(**overrides)
    stack = _read_stack_file(base.home)
    if not stack:
        return base
    explicit = base.model_fields_set
    fill = {k: v for k, v in stack.items() if k in ("nats_url", "s3_endpoint") and k not in explicit}
    return base.model_copy(update=fill) if fill else base


def _read_stack_file(home: Path) -> dict[str, Any]:
    path = home / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
