"""The supervisor's restart rules, with time passed in: dead, or unready past the grace, and back-off."""

from __future__ import annotations

from shared.stack.watchdog import MAX_BACKOFF, SETTLE, ChildWatch


def _watch() -> ChildWatch:
    return ChildWatch(name="nats", grace=15.0, started_at=0.0)


def test_a_dead_child_is_restarted_once_its_back_off_has_passed() -> None:
    w = _watch()
    assert w.observe(exit_code=-9, ready=None, now=0.1) is None  # within the first 0.5 s
    assert w.observe(exit_code=-9, ready=None, now=0.6) == "exited with -9"


def test_a_live_pid_that_stays_unready_is_restarted_after_the_grace() -> None:
    w = _watch()
    assert w.observe(exit_code=None, ready=True, now=1.0) is None
    assert w.observe(exit_code=None, ready=False, now=2.0) is None
    assert w.observe(exit_code=None, ready=False, now=16.0) is None  # unready for 14 s
    assert w.observe(exit_code=None, ready=False, now=17.5) == "alive but unready for 16s"


def test_one_good_answer_resets_the_grace_and_no_probe_decides_nothing() -> None:
    w = _watch()
    w.observe(exit_code=None, ready=False, now=1.0)
    w.observe(exit_code=None, ready=True, now=10.0)
    assert w.observe(exit_code=None, ready=None, now=30.0) is None
    assert w.observe(exit_code=None, ready=False, now=31.0) is None
    assert w.observe(exit_code=None, ready=False, now=45.0) is None


def test_restarts_back_off_doubling_to_a_ceiling_and_settle_back() -> None:
    w = _watch()
    now = 0.0
    waits = []
    for _ in range(9):
        waits.append(w.backoff())
        now += w.backoff()
        reason = w.observe(exit_code=1, ready=None, now=now)
        assert reason == "exited with 1"
        w.restarted(now=now, reason=reason)
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0] and waits[-1] == MAX_BACKOFF
    assert w.restarts == 9 and w.describe()["last_restart"]["reason"] == "exited with 1"  # type: ignore[index]
    w.observe(exit_code=None, ready=True, now=now + 1)
    w.observe(exit_code=None, ready=True, now=now + 1 + SETTLE)
    assert w.backoff() == 0.5
