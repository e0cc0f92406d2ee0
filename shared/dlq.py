"""Dead-letter queue: where input a service cannot accept goes, with its reason, instead of a crash.

The DLQ message body is the original bytes, so it can be inspected or replayed; the reason and
provenance ride in headers. An entry always fits what the server accepts, by construction: the
headers are bounded (the reason is one line of at most `MAX_REASON` bytes), and a body that would
push the entry over the connection's `max_payload` or the DLQ stream's `max_msg_size` is cut to
fit, with `Slmops-Dlq-Truncated: true` and the original size in `Slmops-Dlq-Original-Size` (and a
note at the end of the reason). Never dropped: a publish the server would refuse for size would
also close the service's connection, which is how one bad command once took the registry off the bus.
"""

from __future__ import annotations

from typing import Protocol

from shared import subjects, topology
from shared.messages.envelope import deterministic_id

REASON = "Slmops-Dlq-Reason"
ORIGINAL_SUBJECT = "Slmops-Dlq-Subject"
SERVICE = "Slmops-Dlq-Service"
TRUNCATED = "Slmops-Dlq-Truncated"
ORIGINAL_SIZE = "Slmops-Dlq-Original-Size"
# Bytes of the reason header's value (UTF-8): a screenful, far under any header limit.
MAX_REASON = 2000
# Bytes of the original subject kept (a subject the server delivered is already bounded by its
# max_control_line, 4 KiB by default; this keeps the DLQ's headers small whatever that is).
MAX_SUBJECT = 512
# Headers a client library may add to a publish beyond ours (e.g. a trace context): kept free.
HEADER_SLACK = 512


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
    return {
        REASON: clip_bytes(" ".join(reason.split()), MAX_REASON),
        ORIGINAL_SUBJECT: clip_bytes(original_subject, MAX_SUBJECT),
        SERVICE: service,
        "Nats-Msg-Id": deterministic_id("dlq", service, original_subject, original_id),
    }


def dead_letter_entry(*, body: bytes, headers: dict[str, str], max_payload: int) -> tuple[bytes, dict[str, str]]:
    """The body and headers to publish: `body` cut so headers + body fit `max_payload` and the DLQ
    stream's `max_msg_size`, the cut said in the headers and the reason; unchanged if it fits."""
    limit = min(max_payload, topology.DLQ_MAX_MSG_SIZE) - HEADER_SLACK
    if header_bytes(headers) + len(body) <= limit:
        return body, headers
    marked = headers | {TRUNCATED: "true", ORIGINAL_SIZE: str(len(body))}
    note = " [body truncated: first {} of " + f"{len(body)} bytes kept]"
    reason = clip_bytes(headers[REASON], MAX_REASON - len(note.format(len(body))))
    # Measured with the longest number the note can hold; the real one is no longer.
    marked[REASON] = reason + note.format(len(body))
    kept = max(0, limit - header_bytes(marked))
    marked[REASON] = reason + note.format(kept)
    return body[:kept], marked


async def dead_letter(
    js: JetStreamPublisher,
    *,
    service: str,
    body: bytes,
    reason: str,
    original_subject: str,
    original_id: str,
    max_payload: int = topology.DLQ_MAX_MSG_SIZE,
) -> None:
    """Park `body` on `slmops.dlq.<service>` with `reason`; waits for the stream's ack.

    Args:
        max_payload: the publishing connection's `max_payload` (`Client.max_payload`), the most
            one message, headers included, may take on that server.
    """
    headers = dead_letter_headers(
        service=service, reason=reason, original_subject=original_subject, original_id=original_id
    )
    payload, headers = dead_letter_entry(body=body, headers=headers, max_payload=max_payload)
    await js.publish(subjects.dlq(service), payload, headers=headers)


def header_bytes(headers: dict[str, str]) -> int:
    """What `headers` take on the wire, as nats-py encodes them (`NATS/1.0`, then `Key: value` lines)."""
    return len(b"NATS/1.0\r\n\r\n") + sum(len(k.encode()) + 2 + len(v.encode()) + 2 for k, v in headers.items())


def clip_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character, marked with `...`."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: max(0, limit - 3)].decode(errors="ignore") + "..."
