"""tqueues.explain: a job's situation in words, for each state."""

from __future__ import annotations

import dataclasses

from tests.contract.test_store_workers import beat
from tqueues.explain import MAX_AHEAD, explain, span
from tqueues.jobs import JobRecord, JobStatus, QueueConfig

NOW = 1_800_000_000.0
CONFIG = QueueConfig("q")


def job(**fields: object) -> JobRecord:
    base = JobRecord(id="j1", queue="q", method="m:f", args=[], kwargs={},
                     status=JobStatus.PENDING, priority=10, ttr=60.0, max_attempts=3,
                     attempts=0, ready_at=NOW - 5, created_at=NOW - 5)  # fmt: skip
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def codes(answer: dict[str, object]) -> list[str]:
    return [reason["code"] for reason in answer["reasons"]]  # type: ignore[attr-defined, index]


def test_a_pending_job_says_what_is_ahead_and_who_takes() -> None:
    working = beat("w:1", at=NOW - 1)
    answer = explain(job(), CONFIG, ahead=3, workers=[working], now=NOW)
    assert codes(answer) == ["queued", "workers"]
    assert answer["reasons"][0]["ahead"] == 3  # type: ignore[index]
    assert "3 job(s) of higher or equal priority are ahead" in str(answer["summary"])
    assert "It is next" in str(explain(job(), CONFIG, ahead=0, workers=[], now=NOW)["summary"])
    many = explain(job(), CONFIG, ahead=MAX_AHEAD, workers=[], now=NOW)
    assert "More than 10,000 jobs" in str(many["summary"])


def test_no_worker_lost_workers_and_quiet_ones_are_told_apart() -> None:
    lost = beat("w:1", at=NOW - 60)
    other_queue = beat("w:2", at=NOW, queues=["other"])
    assert "no_worker" in codes(explain(job(), CONFIG, ahead=0, workers=[lost, other_queue],
                                        now=NOW))  # fmt: skip
    quiet = beat("w:3", at=NOW, activity="quiet")
    assert "no_worker_taking" in codes(explain(job(), CONFIG, ahead=0, workers=[quiet], now=NOW))


def test_delayed_paused_and_ttl() -> None:
    delayed = job(status=JobStatus.DELAYED, ready_at=NOW + 90, attempts=1, error="boom",
                  expires_at=NOW + 3600)  # fmt: skip
    answer = explain(delayed, CONFIG, ahead=None, workers=[], now=NOW, paused=True,
                     paused_until=NOW + 30)  # fmt: skip
    assert codes(answer) == ["delayed", "paused", "no_worker", "ttl"]
    assert "delayed until" in str(answer["summary"]) and "in 2 min" in str(answer["summary"])
    assert "after 1 failed attempt(s): boom" in str(answer["summary"])


def test_a_running_a_lapsed_and_an_ended_job() -> None:
    running = job(status=JobStatus.STARTED, worker="w:1", started_at=NOW - 10,
                  lease_expires=NOW + 50, attempts=1)  # fmt: skip
    answer = explain(running, CONFIG, ahead=None, workers=[], now=NOW)
    assert codes(answer) == ["leased"] and "leased to worker w:1" in str(answer["summary"])
    flagged = dataclasses.replace(running, cancel_requested=True)
    assert codes(explain(flagged, CONFIG, ahead=None, workers=[], now=NOW)) == [
        "cancel_requested",
        "leased",
    ]
    lapsed = dataclasses.replace(running, lease_expires=NOW - 3)
    assert "ran out 3.0 s ago" in str(explain(lapsed, CONFIG, ahead=None, workers=[],
                                              now=NOW)["summary"])  # fmt: skip
    buried = job(status=JobStatus.BURIED, attempts=3, error="ValueError: x")
    assert "buried after 3 of 3 attempt(s): ValueError: x" in str(
        explain(buried, CONFIG, ahead=None, workers=[], now=NOW)["summary"]
    )
    failed = job(status=JobStatus.FAILED, attempts=2, error="bad")
    assert codes(explain(failed, CONFIG, ahead=None, workers=[], now=NOW)) == ["failed"]
    done = job(status=JobStatus.FINISHED, attempts=1, finished_at=NOW - 7200)
    assert "2.0 h ago" in str(explain(done, CONFIG, ahead=None, workers=[], now=NOW)["summary"])


def test_spans_read_as_words() -> None:
    assert (span(5), span(-90), span(7200)) == ("in 5.0 s", "2 min ago", "in 2.0 h")
