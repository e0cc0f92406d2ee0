"""The blueprints service as its callers (the CLI, a CI job, other tools) see it."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from nats.aio.client import Client

from shared.clients.rpc import call
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import (
    APPLY_BLUEPRINTS,
    DELETE_BLUEPRINT,
    GET_BLUEPRINT,
    LIST_BLUEPRINTS,
    AppliedBlueprint,
    ApplyBlueprints,
    ApplyResult,
    BlueprintDetail,
    BlueprintSummary,
    DeleteBlueprint,
    GetBlueprint,
    ListBlueprints,
)


class BlueprintsClient:
    """Storing, diffing and reading blueprints by request/reply.

    Args:
        nc: an open connection; the client does not close it.
        source: the envelope `source` of every request (e.g. `cli`).
        timeout: seconds to wait for an answer. An apply reads the inventory, the registry's aliases
            and what every selected device runs before it answers, hence more than a lookup's 10 s.

    Raises (every call): `BusError` when the blueprints service does not answer, `InvalidRequest`
    for blueprints it refuses (the message names each problem's field and reason, or the tie),
    `NotFound` for a blueprint it does not hold, `TransientError` when it could not read what it
    decides from now, and a plain `SlmopsError` when it failed; each carries the code the service
    answered with in `remote_code`.
    """

    def __init__(self, nc: Client, *, source: str, timeout: float = 30.0) -> None:
        self._nc = nc
        self._source = source
        self._timeout = timeout

    async def apply(
        self, blueprints: Sequence[Blueprint], *, dry_run: bool = False, source_file: str | None = None
    ) -> ApplyResult:
        """Store `blueprints` as a whole or not at all; with `dry_run`, only say what would change.

        Args:
            blueprints: the documents to store; others already stored are left as they are.
            dry_run: change nothing, answer what applying would do (`slmops diff`).
            source_file: the file(s) they came from, which the service names in its messages.
        """
        request = ApplyBlueprints(blueprints=list(blueprints), dry_run=dry_run, source=source_file)
        return await call(self._nc, APPLY_BLUEPRINTS, request, source=self._source, timeout=self._timeout)

    async def delete(self, name: str) -> AppliedBlueprint:
        """Forget blueprint `name`; its devices keep what they run."""
        request = DeleteBlueprint(name=name)
        return await call(self._nc, DELETE_BLUEPRINT, request, source=self._source, timeout=self._timeout)

    async def get(self, name: str, *, groups: bool = True) -> BlueprintDetail:
        """The stored document with its devices, lost devices, groups (unless `groups` is false: they
        cost a diff of the fleet) and the controller's status."""
        request = GetBlueprint(name=name, groups=groups)
        return await call(self._nc, GET_BLUEPRINT, request, source=self._source, timeout=self._timeout)

    async def list(self) -> builtins.list[BlueprintSummary]:
        """Every stored blueprint, as the service orders them."""
        return await call(self._nc, LIST_BLUEPRINTS, ListBlueprints(), source=self._source, timeout=self._timeout)
