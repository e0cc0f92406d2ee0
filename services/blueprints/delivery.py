"""Whether a version reached a blueprint's fleet, as `slmops blueprint wait` (a CI job's last step)
reads it from the blueprint's status: a pure function, so the job's exit code means one thing.

    delivered   the tracked alias names the version, every device the blueprint owns is on what it
                says, and, with `promote`, the version was promoted
    failed      a rollout of the version for this generation of the blueprint was rolled back,
                aborted or refused: the controller does not try that version on those devices again
                by itself (a rolled-back version waits for a new one or a changed blueprint)
    pending     anything else (building variants, rolling out, waiting for a window, the alias not
                moved yet)
"""

from __future__ import annotations

from typing import Literal

from shared.messages.blueprint_api import BlueprintDetail

Delivery = Literal["delivered", "failed", "pending"]
GIVEN_UP = ("rolled_back", "aborted", "refused")


def delivery(detail: BlueprintDetail, version: str) -> tuple[Delivery, str]:
    """The version's delivery to the blueprint's devices, and the controller's summary (or why)."""
    status, stored = detail.status, detail.stored
    if status is None or status.generation != stored.generation:
        return "pending", "the controller has not reconciled this generation yet"
    for rollout in reversed(status.rollouts):
        if rollout.version == version and rollout.generation == stored.generation and rollout.state in GIVEN_UP:
            reason = f": {rollout.reason}" if rollout.reason else ""
            return "failed", f"rollout {rollout.rollout_id} of {version} was {rollout.state.replace('_', ' ')}{reason}"
    promote = stored.blueprint.spec.promote
    if status.version == version and status.pending == 0 and (promote is None or version in status.promoted):
        return "delivered", status.summary
    return "pending", status.summary
