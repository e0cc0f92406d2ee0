"""The service kit: a service's `app.py` declares, the kit wires FastStream, topology and policy.

    service.py    ServiceKit: declarations -> the running app and the AsyncAPI document
    policy.py     how every message is settled: acks, DLQ, bounded retries, replies
    handlers.py   the typed handlers FastStream subscribes (so AsyncAPI shows real payloads)
    broker.py     the FastStream NATS broker with OpenTelemetry
    asyncapi.py   the AsyncAPI documents of every service, for `slmops schema export`

Only a service's `app.py` imports this package; its use cases return `shared.outcomes.Outcome`.
"""

from shared.kit.policy import Publisher
from shared.kit.service import KitSetupError, Runtime, ServiceKit, UseCase

__all__ = ["KitSetupError", "Publisher", "Runtime", "ServiceKit", "UseCase"]
