"""The declared topology is bounded everywhere, and an existing stream is changed only where it differs
from the declaration (what an operator set that is not declared survives)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from nats.js.api import DiscardPolicy, StreamConfig

from shared import topology
from shared.messages.common import MAX_CONFIG_BYTES
from shared.messages.device import DesiredState, SmokeInput
from shared.messages.envelope import MAX_ENVELOPE_BYTES, MAX_HEADER_BYTES


def test_every_stream_and_bucket_has_byte_limits() -> None:
    for stream in topology.STREAMS:
        assert stream.max_bytes and stream.max_bytes > 0, stream.name
        assert stream.max_msg_size and stream.max_msg_size > 0, stream.name
    for bucket in topology.KV_BUCKETS:
        assert bucket.max_bytes and bucket.max_value_size, bucket.bucket


def test_a_stream_takes_an_envelope_and_its_headers_and_the_dlq_takes_any_of_them() -> None:
    by_name = {s.name: s for s in topology.STREAMS}
    assert by_name[topology.CMDS_STREAM].max_msg_size == MAX_ENVELOPE_BYTES + MAX_HEADER_BYTES
    biggest = max(s.max_msg_size or 0 for s in topology.STREAMS if s.name != topology.DLQ_STREAM)
    assert by_name[topology.DLQ_STREAM].max_msg_size == topology.DLQ_MAX_MSG_SIZE >= biggest + MAX_HEADER_BYTES


def test_the_reserved_storage_fits_the_compose_server() -> None:
    """`max_bytes` is reserved against the server's JetStream storage: deploy/nats/nats.conf has 10 GB."""
    total = sum(s.max_bytes or 0 for s in topology.STREAMS) + sum(b.max_bytes or 0 for b in topology.KV_BUCKETS)
    assert total < 6 * 1024**3


def test_only_the_declared_fields_that_differ_are_changed() -> None:
    declared = topology.STREAMS[0]
    fields = {name: getattr(declared, name) for name in topology._STREAM_FIELDS}
    on_server = replace(declared, num_replicas=3, max_bytes=None, max_msg_size=-1, discard=DiscardPolicy.OLD)
    changes = topology.stream_changes(on_server, fields)
    assert changes == {
        "max_bytes": declared.max_bytes,
        "max_msg_size": declared.max_msg_size,
        "discard": DiscardPolicy.NEW,
    }
    assert "num_replicas" not in changes
    as_declared = StreamConfig(**{**on_server.__dict__, **changes})
    assert topology.stream_changes(as_declared, fields) == {}


def test_enum_values_read_back_as_strings_are_no_change() -> None:
    declared = topology.STREAMS[0]
    fields = {name: getattr(declared, name) for name in topology._STREAM_FIELDS}
    read_back = replace(declared, discard="new", retention="workqueue", storage="file")  # type: ignore[arg-type]
    assert topology.stream_changes(read_back, fields) == {}


def test_a_desired_state_with_the_largest_settings_and_every_field_at_its_longest_fits_its_bucket() -> None:
    padding = MAX_CONFIG_BYTES - len('{"blob":""}')
    longest = DesiredState(
        device_id="d" * 64,
        rollout_id="r" * 64,
        wave=2**63,
        model="m" * 63,
        version="v" * 63,
        variant="x" * 63,
        digest="a" * 64,
        size_bytes=2**63,
        signature="s" * 88,  # an Ed25519 signature in base64
        smoke_input=SmokeInput(digest="b" * 64, size_bytes=2**63),
        shadow=True,
        config={"blob": "é" * (padding // 2)},  # two bytes each: the limit is on UTF-8 bytes
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        issued_at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    )
    (desired,) = [b for b in topology.KV_BUCKETS if b.bucket == topology.KV_DESIRED]
    assert desired.max_value_size == topology.DESIRED_MAX_BYTES
    assert len(longest.model_dump_json().encode()) + 1024 <= topology.DESIRED_MAX_BYTES, "with room to spare"
