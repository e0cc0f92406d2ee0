"""Dead-letter queue: where input a service cannot accept goes, with its reason, instead of a crash.

The DLQ message body is the original bytes, unchanged, so it can be inspected or replayed; the
reason and provenance ride in headers.
"""

from __future__ import annotations

from typing import Protocol

from shared import subjects
from shared.messages.envelope import deterministic_id

REASON = "Slmops-Dlq-Reason"
ORIGINAL_SUBJECT = "Slmops-Dlq-Subject"
SERVICE = "Slmops-Dlq-Service"
MAX_REASON = 2000


class JetStreamPublisher(Protocol):
    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> object: ...


def dead_letter_headers(*, service: str, reason: str, original_subject: str, original_id: str) -> dict[str, str]:
    """Headers for a DLQ entry; `original_id` (message id or stream position) makes retries idempotent."""
    one_line = " ".join(reason.split())[:MAX_REASON]
    return {
        REASON: one_line,
        ORIGINAL_SUBJECT: original_subject,
        SERVICE: service,
        "Nats-Msg-Id": deterministic_id("dlq", service, original_subject, original_id),
    }


async def dead_letter(
    js: JetStreamPublisher, *, service: str, body: bytes, reason: str, original_subject: str, original_id: str
) -> None:
    """Park `body` on `slmops.dlq.<service>` with `reason`; waits for the stream's ack."""
    headers = dead_letter_headers(
        service=service, reason=reason, original_subject=original_subject, original_id=original_id
    )
    await js.publish(subjects.dlq(service), body, headers=headers)
