"""Auto-optimization: which optimize commands a newly registered model gets, as a pure rule.

With `SLMOPS_OPTIMIZER_AUTO_PROFILES=rpi5,gateway`, every model registered with an evaluation set is
queued for those profiles. Each command's id is derived from (digest, profile), so a replayed
`model.registered` event queues nothing twice (JetStream drops the duplicate).
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.messages.envelope import deterministic_id
from shared.messages.optimizer import OptimizeModel
from shared.messages.registry import ModelVersionRecord


def optimize_requests(record: ModelVersionRecord, profiles: Sequence[str]) -> list[tuple[OptimizeModel, str]]:
    """One optimize command per profile, each with its deterministic id; none without an evaluation set
    (there is nothing to measure candidates against)."""
    if record.eval_set is None:
        return []
    return [
        (
            OptimizeModel(name=record.name, version=record.version, profile=profile),
            deterministic_id("auto-optimize", record.artifact.digest, profile),
        )
        for profile in profiles
    ]
