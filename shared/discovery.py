"""What this installation provides, found through package metadata, so `shared` names no service.

Each service declares itself in `pyproject.toml`:

    [project.entry-points."slmops.services"]   name -> the `declare()` of its `app.py` (a ServiceKit)
    [project.entry-points."slmops.cli"]        name -> its typer command group or command

`slmops up` starts every service found here, `slmops service run NAME` runs one, `slmops schema
export` documents each, and the root CLI adds every command. Reading entry points costs no import
of the services themselves; `load_*` imports only the one asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidRequest

if TYPE_CHECKING:
    from shared.kit import ServiceKit

SERVICES_GROUP = "slmops.services"
CLI_GROUP = "slmops.cli"


def service_names() -> list[str]:
    """Every service this installation can run, in a stable order."""
    return sorted(ep.name for ep in entry_points(group=SERVICES_GROUP))


def load_service(name: str) -> Callable[[], ServiceKit[Any]]:
    """The `declare` function of service `name`.

    Raises:
        InvalidRequest: no service has that name (the message lists the known ones).
    """
    found = {ep.name: ep for ep in entry_points(group=SERVICES_GROUP)}
    if name not in found:
        raise InvalidRequest(f"unknown service {name!r}; services: {', '.join(sorted(found)) or 'none installed'}")
    declare: Callable[[], ServiceKit[Any]] = found[name].load()
    return declare


def cli_entry_points() -> list[EntryPoint]:
    """The command groups and commands services add to `slmops`, by name."""
    return sorted(entry_points(group=CLI_GROUP), key=lambda ep: ep.name)
