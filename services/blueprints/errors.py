"""The blueprints' error tree, under the platform's (`shared.errors`):

    InvalidRequest
    └── BlueprintError          anything wrong with blueprints the caller gave: refused, never retried
        ├── InvalidBlueprint    a file or document that does not load or check (each problem's path and reason)
        ├── DuplicateBlueprint  two blueprints with one name in one set
        └── PriorityTie         blueprints of equal priority select the same devices

Each carries what it is about as attributes, so a CLI or a service can render it its own way; the
message alone says what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import InvalidRequest


class BlueprintError(InvalidRequest):
    """Blueprints the caller gave that cannot be applied as they are."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong in a file: where (document, field path) and why.

    Args:
        document: 1-based position of the YAML document in the file; None for the file as a whole.
        blueprint: the document's `metadata.name`, when it has one.
        path: the field, as `spec.overrides[0].config`; empty for the whole document.
        reason: what is wrong, in words.
    """

    document: int | None
    blueprint: str | None
    path: str
    reason: str

    def describe(self, source: str) -> str:
        where = source
        if self.document is not None:
            where += f", document {self.document}"
            if self.blueprint:
                where += f" ({self.blueprint})"
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class InvalidBlueprint(BlueprintError):
    """A file that does not load: every problem found, one per line, each with its document and field."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(p.describe(source) for p in self.problems))


class DuplicateBlueprint(BlueprintError):
    """Two blueprints share a name; a name is a blueprint's key, so one would silently replace the other."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"blueprint {name!r} is given twice")


@dataclass(frozen=True, kw_only=True)
class Tie:
    """Blueprints of the same, highest, priority that all select these devices."""

    blueprints: tuple[str, ...]
    priority: int
    devices: tuple[str, ...]

    def describe(self, *, shown: int = 5) -> str:
        names = ", ".join(self.blueprints[:-1]) + f" and {self.blueprints[-1]}"
        devices = ", ".join(self.devices[:shown])
        if len(self.devices) > shown:
            devices += f" and {len(self.devices) - shown} more"
        noun = "device" if len(self.devices) == 1 else "devices"
        return f"blueprints {names} have the same priority ({self.priority}) and all select {noun} {devices}"


class PriorityTie(BlueprintError):
    """Equal priorities on one device: refused rather than broken by creation time or name, which
    surprises whoever applied the second one (Azure IoT Edge's rule)."""

    def __init__(self, ties: Sequence[Tie]) -> None:
        self.ties = tuple(ties)
        super().__init__(
            "; ".join(t.describe() for t in self.ties)
            + ": give one a higher priority or narrow a selector so that one blueprint owns each device"
        )
