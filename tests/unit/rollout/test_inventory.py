"""The inventory fold (services/rollout/inventory.py): hellos and statuses in any order and any
number of times give the record of the newest of each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.rollout.inventory import is_online, with_hello, with_status, worth_writing
from shared.messages.device import DeviceHello, DeviceStatus
from shared.messages.inventory import DeviceRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD, NEW = "a" * 64, "b" * 64


def hello(**fields: Any) -> DeviceHello:
    values: dict[str, Any] = {
        "device_id": "d1",
        "device_class": "rpi5",
        "arch": "aarch64",
        "ram_mb": 8192,
        "cpu_count": 4,
        "onnxruntime_version": "1.20.1",
        "execution_providers": ["CPUExecutionProvider"],
        "agent_version": "1",
    } | fields
    return DeviceHello(**values)


def status(step: str, *, revision: int = 2, active: str | None = None) -> DeviceStatus:
    reason = "smoke test failed" if step in ("failed", "rolled_back") else None
    return DeviceStatus(
        device_id="d1", desired_revision=revision, digest=NEW, step=step, active_digest=active, reason=reason
    )


def test_a_hello_records_the_device_and_a_later_one_replaces_its_capabilities() -> None:
    first = with_hello(None, hello(labels={"site": "north"}, active_digest=OLD), at=T0)
    assert (first.first_seen, first.last_seen, first.active_digest, first.labels) == (T0, T0, OLD, {"site": "north"})
    later = with_hello(first, hello(ram_mb=4096, labels={}), at=T0 + timedelta(seconds=30))
    assert (later.ram_mb, later.labels, later.first_seen) == (4096, {}, T0)
    assert later.last_seen == T0 + timedelta(seconds=30)


def test_an_older_hello_changes_nothing_but_when_the_device_was_first_seen() -> None:
    current = with_hello(None, hello(ram_mb=4096), at=T0 + timedelta(seconds=60))
    late = with_hello(current, hello(ram_mb=1), at=T0)
    assert late.ram_mb == 4096 and late.last_seen == current.last_seen and late.first_seen == T0


def test_statuses_record_the_last_step_and_what_serves_after_it() -> None:
    record = with_hello(None, hello(active_digest=OLD), at=T0)
    downloading = with_status(record, status("downloading"), at=T0 + timedelta(seconds=1))
    assert downloading is not None and downloading.active_digest == OLD and downloading.last_status is not None
    assert (downloading.last_status.step, downloading.last_status.desired_revision) == ("downloading", 2)
    active = with_status(downloading, status("active", active=NEW), at=T0 + timedelta(seconds=5))
    assert active is not None and active.active_digest == NEW and active.last_seen == T0 + timedelta(seconds=5)
    late = with_status(active, status("verifying"), at=T0 + timedelta(seconds=3))
    assert late == active, "a late step does not overwrite a newer one"


def test_the_settings_served_are_recorded_with_the_model_from_the_newest_report_that_names_it() -> None:
    settings = "c" * 64
    record = with_hello(None, hello(active_digest=OLD, config_digest=settings), at=T0)
    assert record.active_config_digest == settings
    active = status("active", active=NEW).model_copy(update={"config_digest": None})
    after = with_status(record, active, at=T0 + timedelta(seconds=5))
    assert after is not None and after.last_status is not None
    assert (after.active_digest, after.active_config_digest, after.last_status.config_digest) == (NEW, None, None)
    resettled = status("active", active=NEW).model_copy(update={"config_digest": settings})
    again = with_status(after, resettled, at=T0 + timedelta(seconds=9))
    assert again is not None and again.active_config_digest == settings and worth_writing(after, again)
    late = with_hello(again, hello(active_digest=OLD), at=T0 + timedelta(seconds=7))
    assert (late.active_digest, late.active_config_digest) == (NEW, settings), "an older hello names neither"


def test_a_status_before_any_hello_makes_no_record() -> None:
    assert with_status(None, status("active", active=NEW), at=T0) is None


def test_online_means_heard_from_within_three_heartbeats() -> None:
    record = with_hello(None, hello(), at=T0)
    assert is_online(record, now=T0 + timedelta(seconds=90), heartbeat_seconds=30)
    assert not is_online(record, now=T0 + timedelta(seconds=91), heartbeat_seconds=30)


Report = tuple[int, str]  # (seconds after T0, "hello:<ram>" | "status:<step>")


@given(
    st.lists(
        st.tuples(
            st.integers(1, 100),
            st.sampled_from(["hello:1024", "hello:2048", "status:downloading", "status:active", "status:failed"]),
        ),
        max_size=12,
        unique_by=lambda r: r[0],  # one report per instant: "newest" is then well defined
    ),
    st.randoms(use_true_random=False),
)
def test_the_record_is_the_same_whatever_order_and_repeats_the_reports_arrive_in(
    reports: list[Report], rng: Any
) -> None:
    """After the device's first hello (it says hello before it acts), any arrival order of its later
    reports, with some delivered twice, folds to the record of the in-order fold."""

    def fold(order: list[Report]) -> DeviceRecord | None:
        record = with_hello(None, hello(ram_mb=512, active_digest=OLD), at=T0)
        for seconds, report in order:
            kind, value = report.split(":")
            at = T0 + timedelta(seconds=seconds)
            if kind == "hello":
                record = with_hello(record, hello(ram_mb=int(value), active_digest=OLD), at=at)
            else:
                folded = with_status(record, status(value, active=NEW if value == "active" else None), at=at)
                assert folded is not None
                record = folded
        return record

    shuffled = [*reports, *rng.sample(reports, len(reports) // 2)]
    rng.shuffle(shuffled)
    assert fold(shuffled) == fold(sorted(reports))


def test_only_what_a_reader_needs_is_written() -> None:
    """An install is one write (its outcome), a heartbeat is written when last_seen moved 45 s, and
    anything new about the device at once."""
    stored = with_hello(None, hello(active_digest=OLD), at=T0)
    assert worth_writing(None, stored), "a new device"
    soon = T0 + timedelta(seconds=5)
    assert not worth_writing(stored, with_hello(stored, hello(active_digest=OLD), at=soon)), "a heartbeat, 5 s on"
    later = T0 + timedelta(seconds=45)
    assert worth_writing(stored, with_hello(stored, hello(active_digest=OLD), at=later)), "45 s on"
    assert worth_writing(stored, with_hello(stored, hello(active_digest=OLD, ram_mb=4096), at=soon)), "new RAM"
    for step in ("received", "downloading", "verified", "smoke_testing"):
        assert not worth_writing(stored, with_status(stored, status(step), at=soon) or stored), step
    active = with_status(stored, status("active", active=NEW), at=soon)
    assert active is not None and worth_writing(stored, active), "the outcome, and what serves now"
    failed = with_status(stored, status("failed", active=OLD), at=soon)
    assert failed is not None and worth_writing(stored, failed)
    # The hello a device sends after switching names what the active status already recorded.
    assert not worth_writing(active, with_hello(active, hello(active_digest=NEW), at=soon + timedelta(seconds=1)))
