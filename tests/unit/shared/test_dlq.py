"""A DLQ entry always fits what the server accepts: bounded headers, a body cut to fit and said so."""

from __future__ import annotations

from shared import dlq, topology


def _headers(reason: str = "body is not JSON") -> dict[str, str]:
    return dlq.dead_letter_headers(service="registry", reason=reason, original_subject="slmops.cmd.x", original_id="7")


def test_an_entry_that_fits_is_the_original_bytes_unchanged() -> None:
    body, headers = dlq.dead_letter_entry(body=b"abc", headers=_headers(), max_payload=1024 * 1024)
    assert body == b"abc" and dlq.TRUNCATED not in headers


def test_a_body_that_would_not_fit_is_cut_so_that_headers_and_body_do() -> None:
    max_payload = 64 * 1024
    original = b"x" * max_payload
    body, headers = dlq.dead_letter_entry(body=original, headers=_headers("r" * 5000), max_payload=max_payload)
    assert dlq.header_bytes(headers) + len(body) <= max_payload - dlq.HEADER_SLACK
    assert original.startswith(body) and len(body) > max_payload // 2
    assert headers[dlq.TRUNCATED] == "true" and headers[dlq.ORIGINAL_SIZE] == str(max_payload)
    assert headers[dlq.REASON].endswith(f"[body truncated: first {len(body)} of {max_payload} bytes kept]")
    assert len(headers[dlq.REASON].encode()) <= dlq.MAX_REASON


def test_the_dlq_stream_limit_applies_even_on_a_server_that_allows_more() -> None:
    original = b"y" * (2 * topology.DLQ_MAX_MSG_SIZE)
    body, headers = dlq.dead_letter_entry(body=original, headers=_headers(), max_payload=8 * 1024 * 1024)
    assert dlq.header_bytes(headers) + len(body) <= topology.DLQ_MAX_MSG_SIZE
    assert headers[dlq.ORIGINAL_SIZE] == str(len(original))


def test_headers_are_bounded_in_bytes_and_one_line() -> None:
    headers = dlq.dead_letter_headers(
        service="registry", reason="é\r\n" * 5000, original_subject="s." * 3000, original_id="1"
    )
    assert len(headers[dlq.REASON].encode()) <= dlq.MAX_REASON and "\n" not in headers[dlq.REASON]
    assert len(headers[dlq.ORIGINAL_SUBJECT].encode()) <= dlq.MAX_SUBJECT
    headers[dlq.REASON].encode()  # cut on a character boundary: still valid UTF-8


def test_header_bytes_counts_what_nats_py_sends() -> None:
    # NATS/1.0\r\n + "A: b\r\n" + \r\n
    assert dlq.header_bytes({"A": "b"}) == len(b"NATS/1.0\r\nA: b\r\n\r\n")
