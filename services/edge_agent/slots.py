"""The device's local state: two model slots (A/B), which one serves, and nothing else.

Crash safety comes from ordering and atomic renames: a new model is written into the *inactive*
slot (temp file, fsync, rename), and only then does `state.json` — replaced atomically by rename —
name it active. Power loss at any moment leaves either the old state (previous model serving) or
the new one; never a half-written model in the active slot. The previous slot is kept, so going
back is a switch, not a download.

A slot's model has its application settings beside it (`slots/<slot>/config.json`, the desired
state's `config`; no file: none), written the same way before the switch names the slot active, so
the settings switch with the model, a rollback's included. A local application reads the active
ones from the agent (`GET /v1/config`), not from here: which slot is active is the state's to say.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.edge_agent.desired import NO_CONFIG, AppConfig
from services.edge_agent.install import Slots
from shared.messages.device import Slot

SLOTS: tuple[Slot, Slot] = ("a", "b")
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
log = logging.getLogger("slmops.agent")


@dataclass(frozen=True, kw_only=True)
class SlotContent:
    """What a slot holds, and the rollout and wave of the desired state that made it serve (None
    for a model set by hand): telemetry windows name them, and they must survive a restart."""

    digest: str
    model: str
    version: str
    variant: str | None
    installed_at: str
    rollout_id: str | None = None
    wave: int | None = None


@dataclass(frozen=True, kw_only=True)
class LocalState:
    active: Slot | None
    slots: dict[Slot, SlotContent | None]

    @property
    def active_content(self) -> SlotContent | None:
        return self.slots[self.active] if self.active else None

    def view(self) -> Slots:
        """The digests in the slots, as the install state machine decides on them."""
        return Slots(active=self.active, contents={s: c.digest if c else None for s, c in self.slots.items()})


class SlotStore:
    """Slots and state under `<root>`: `state.json`, `slots/<a|b>/model.onnx` (and `config.json`), `downloads/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for slot in SLOTS:
            (root / "slots" / slot).mkdir(parents=True, exist_ok=True)
        self.downloads.mkdir(parents=True, exist_ok=True)

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    def model_path(self, slot: Slot) -> Path:
        return self.root / "slots" / slot / "model.onnx"

    def partial_download(self, digest: str) -> Path:
        return self.downloads / f"{digest}.part"

    def config_path(self, slot: Slot) -> Path:
        return self.root / "slots" / slot / CONFIG_FILE

    def config(self, slot: Slot) -> AppConfig:
        """The settings stored with `slot`'s model: NO_CONFIG when there are none, or when the file is
        not a JSON object (disk trouble, a hand edit): the next install or keep writes it again."""
        path = self.config_path(slot)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return NO_CONFIG
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("unreadable settings: serving none", extra={"path": str(path), "reason": str(exc)})
            return NO_CONFIG
        if not isinstance(values, dict):
            log.warning("settings that are not a JSON object: serving none", extra={"path": str(path)})
            return NO_CONFIG
        return AppConfig.of(values)

    def write_config(self, slot: Slot, values: Mapping[str, Any] | None) -> None:
        """Store `values` as `slot`'s settings (None: remove them) so that a crash leaves the old
        settings or the new ones, never a mix: temp file, fsync, rename."""
        path = self.config_path(slot)
        if values is None:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".tmp")
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(values, f, ensure_ascii=False, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        _fsync(path.parent)

    def load(self) -> LocalState:
        path = self.root / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return LocalState(active=None, slots={"a": None, "b": None})
        # A slot whose file is gone (disk trouble, manual cleanup) is not something we can serve.
        slots: dict[Slot, SlotContent | None] = {
            s: SlotContent(**doc["slots"][s]) if doc["slots"].get(s) and self.model_path(s).exists() else None
            for s in SLOTS
        }
        active = doc.get("active")
        return LocalState(active=active if active in SLOTS and slots[active] else None, slots=slots)

    def place(self, slot: Slot, source: Path) -> Path:
        """Move a verified file into `slot` (same filesystem: an atomic rename), durably."""
        target = self.model_path(slot)
        _fsync(source)
        os.replace(source, target)
        _fsync(target.parent)
        return target

    def commit(self, state: LocalState) -> None:
        """Write `state` so that a crash leaves either the old or the new state, never a mix."""
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        doc = {
            "schema_version": 1,
            "active": state.active,
            "slots": {s: asdict(c) if c else None for s, c in state.slots.items()},
        }
        with tmp.open("w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync(self.root)


def installed(
    digest: str,
    *,
    model: str,
    version: str,
    variant: str | None,
    rollout_id: str | None = None,
    wave: int | None = None,
) -> SlotContent:
    return SlotContent(
        digest=digest,
        model=model,
        version=version,
        variant=variant,
        installed_at=datetime.now(UTC).isoformat(),
        rollout_id=rollout_id,
        wave=wave,
    )


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (the rename), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
