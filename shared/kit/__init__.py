"""The service kit: a service's `app.py` declares, the kit wires FastStream, topology and policy.

    service.py    ServiceKit: declarations -> the running app and the AsyncAPI document
    policy.py     how every message is settled: acks, DLQ, bounded retries, replies
    handlers.py   the typed handlers FastStream subscribes (so AsyncAPI shows real payloads)
    broker.py     the FastStream NATS broker with OpenTelemetry
    asyncapi.py   the AsyncAPI documents of every service, for `slmops schema export`

Only a service's `app.py` imports this package (and `slmops schema export`, to describe it); its use
cases return `shared.outcomes.Outcome` and know nothing of it.
"""

from shared.kit.policy import Publisher
from shared.kit.service import CommandUseCase, EventUseCase, KitSetupError, Runtime, ServiceKit

__all__ = ["CommandUseCase", "EventUseCase", "KitSetupError", "Publisher", "Runtime", "ServiceKit"]
