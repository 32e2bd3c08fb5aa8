"""Every HTTP operation of the dispatcher, declared once: the one place to add a route.

Each :class:`~tqueues.dispatcher.operation.Operation` gives the method, the path, the view,
the name, the roles, a summary, the models of its body and query string, and its
answers. :func:`tqueues.dispatcher.app.setup_routes` registers the routes from this table,
in its order (the router tries the paths under ``/queues/`` one after another, so the
ones every job goes through come first, and ``jobs/next`` and ``jobs/stream`` come before
``jobs/{id}``); :mod:`tqueues.dispatcher.auth` checks the roles it gives;
:mod:`tqueues.dispatcher.openapi` writes the document from it.

A job id in a path is any one segment (aiohttp's default leaves out braces): the view
answers for every id, 400 for one no job can have.
"""

from __future__ import annotations

from tqueues.dispatcher import (
    auth,
    explaining,
    jobstream,
    rest,
    schedules,
    takestream,
    taking,
    views,
    workers,
    ws,
)
from tqueues.dispatcher import models as m
from tqueues.dispatcher.meta import health, openapi
from tqueues.dispatcher.metrics import metrics
from tqueues.dispatcher.operation import ANY_ROLE, Answer, Operation

ADMIN = frozenset({"admin"})
PRODUCER = frozenset({"admin", "producer"})
WORKER = frozenset({"admin", "worker"})
#: The roles that read jobs and queues: all but ``monitor``, which sees no job.
READ = ANY_ROLE - {"monitor"}
MONITOR = frozenset({"admin", "monitor"})

QUEUE = "/queues/{name}"
#: Any one segment but the literal routes beside it (their Allow is their own).
JOB = "/queues/{name}/jobs/{id:(?!(?:next|stream)/?$)[^/]+}"
SCHEDULES = f"{QUEUE}/schedules"
SCHEDULE = f"{SCHEDULES}/{{schedule}}"
THE_JOB = {200: Answer("The job after the change.", "Job")}
TAKEN = {200: Answer("The jobs taken (maybe none).", "TakenJobs")}
SWITCHING = {101: Answer("Switching to the WebSocket protocol.", None)}
MISSING = Answer("The queue does not exist (the original API's answer).")


def _action(name: str, view_name: str, summary: str, body: object, **more: object) -> Operation:
    """``POST .../jobs/{id}/{name}``: a transition of one job."""
    return Operation(
        "POST", f"{JOB}/{name}", rest.JobAction, view_name, more.pop("roles", WORKER),  # type: ignore[arg-type]
        summary, THE_JOB, errors=(400, 404, 409), body=body,
        body_required=bool(more.pop("body_required", False)),
        query=more.pop("query", m.LeaseQuery),  # type: ignore[arg-type]
    )  # fmt: skip


OPERATIONS: tuple[Operation, ...] = (
    # -- the documented TQueues API on / (a missing queue answers 501 there) ----------------
    Operation(
        "PUT", "/", views.Dispatcher, "legacy_create_queue", PRODUCER,
        "Create the queue unless it exists.",
        {200: Answer("Always ok.", {"const": "ok"}, "text/plain")},
        errors=(400, 413), body=m.QueueSettings, query=m.LegacyQueueQuery, tag="/",
    ),
    Operation(
        "POST", "/", views.Dispatcher, "legacy_put", PRODUCER,
        "Enqueue a job (the body names its queue; a ?queue= is read when it does not).",
        {200: Answer("The stored job.", "Job"), 501: MISSING},
        errors=(400, 413), body=m.LegacyNewJob, body_required=True, tag="/",
        form_json=("args", "kwargs", "priority", "ttr", "max_attempts", "delay"),
    ),
    Operation(
        "GET", "/", views.Dispatcher, "legacy_take_or_get", WORKER,
        "Take the next job of `queue` (its lease included), or read job `id`.",
        {200: Answer("The job.", {"anyOf": [{"$ref": "TakenJob"}, {"$ref": "Job"}]}),
         404: Answer("queue_empty: no job came; job_not_found."), 501: MISSING},
        errors=(400,), query=m.LegacyTakeQuery, read_roles=frozenset({"producer"}), tag="/",
        description="Roles: worker (take, read), producer (read).",
    ),
    Operation(
        "PATCH", "/", views.Dispatcher, "legacy_update", WORKER,
        "Merge fields into job `id`; with `lease`, touch it too.",
        {**THE_JOB, 501: MISSING}, errors=(400, 404, 409, 413), body=m.UpdateFields,
        query=m.LegacyJobQuery, tag="/",
    ),
    Operation(
        "DELETE", "/", views.Dispatcher, "legacy_end", WORKER,
        "End the run of job `id`: {result}, {error, traceback, permanent}, "
        "{release: true, delay} or {bury: true, reason}.",
        {**THE_JOB, 501: MISSING}, errors=(400, 404, 409, 413), body=m.LegacyEnd,
        query=m.LegacyJobQuery, tag="/",
    ),
    Operation(
        "GET", "/ws", ws.websocket, "websocket", READ,
        "WebSocket change stream of `queue`: every job then the changes, or with "
        "`start=now` the changes only (see docs/http-api.rst).",
        {**SWITCHING, 501: MISSING}, errors=(400,), query=m.WsQuery, websocket=True,
        token_in_query=True, tag="/",
    ),
    Operation(
        "GET", "/health", health, "health", ANY_ROLE, "200 while the store answers.",
        {200: Answer("Healthy.", "Health")}, errors=(),
    ),
    Operation(
        "GET", "/openapi.json", openapi, "openapi", ANY_ROLE, "This document.",
        {200: Answer("The OpenAPI document.", {"type": "object"})}, errors=(),
    ),
    Operation(
        "GET", "/whoami", auth.whoami, "whoami", ANY_ROLE,
        "The role of the token presented and the operations it may call (the dashboard "
        "shows only the actions these allow).",
        {200: Answer("The role and its operations.", "Whoami")}, errors=(),
    ),
    Operation(
        "GET", "/metrics", metrics, "metrics", MONITOR,
        "This dispatcher's metrics in the Prometheus text format (docs/observability.rst).",
        {200: Answer("The metrics.", {"type": "string"}, "text/plain")}, errors=(),
    ),
    # -- the REST API: the routes every job goes through first -----------------------------
    Operation(
        "POST", f"{QUEUE}/jobs", rest.Jobs, "put", PRODUCER,
        f"Enqueue one job, or a batch of 1 to {m.MAX_BATCH} (all validated before any is "
        "stored; one durable write). A `queue` in a job is tolerated if it is the path's. "
        "A job with a `key` that a pending, delayed or started job of the queue holds is "
        "a duplicate: that job is answered, untouched, with `duplicate`: true, and nothing "
        "is stored for it.",
        {201: Answer("The stored job, or the stored batch in order.",
                     {"oneOf": [{"$ref": "Job"}, {"$ref": "StoredJobs"}]}),
         200: Answer("Every job was a duplicate: the live jobs that hold their keys.",
                     {"oneOf": [{"$ref": "Job"}, {"$ref": "StoredJobs"}]})},
        errors=(400, 404, 413), body=m.Enqueue, body_required=True,
    ),
    Operation(
        "GET", f"{QUEUE}/jobs", rest.Jobs, "list_jobs", READ,
        "List the queue's jobs in creation order, a page at a time.",
        {200: Answer("One page.", "JobPage")}, query=m.ListQuery,
    ),
    Operation(
        "POST", f"{QUEUE}/take", taking.Take, "take_many", WORKER,
        "Take up to `count` jobs, each with its lease, waiting up to `wait` seconds for the "
        "first. An empty list when none came.", TAKEN, query=m.TakeQuery,
    ),
    Operation(
        "POST", f"{QUEUE}/outcomes", taking.Outcomes, "report", WORKER,
        f"Report how 1 to {m.MAX_OUTCOMES} runs ended, each applied on its own as POST "
        "/queues/{name}/jobs/{id}/{action}?lease= would, in one durable write. Every item "
        "is validated first; a 400 names the first bad one (outcomes[i]). With `take`, up "
        "to that many pending jobs are also taken (as POST /queues/{name}/take?count= "
        "without waiting) in the same write: the next jobs in the same round trip.",
        {200: Answer("One result per outcome, in order: the job after the change (durable), "
                     "or the error that item alone got (404 job_not_found, 409 "
                     "lease_mismatch or invalid_transition, 503); with `take`, the `jobs` "
                     "taken (maybe none).", "OutcomeResults")},
        errors=(400, 404, 413), body=m.OutcomeBatch, body_required=True,
    ),
    _action("finish", "finish", "Finish the job with its result.", m.Finish),
    _action("fail", "fail", "Report a failed run: retried with backoff while attempts "
            "remain, then buried; failed at once when permanent.", m.Fail, body_required=True),
    _action("release", "release", "Give the job back untried; it keeps its place. Pending "
            "again after `delay`.", m.Release),
    _action("requeue", "requeue", "Give the job back untried, to the end of the queue.",
            m.Release),
    _action("touch", "touch", "Extend the lease by `ttr` seconds (default: the job's ttr) "
            "from now.", m.Touch, query=m.TouchQuery),
    _action("bury", "bury", "Set the job aside until kicked.", m.Bury),
    _action("kick", "kick_job", "Make a buried, failed or delayed job pending now (a buried "
            "or failed one with its attempts renewed).", m.KickJob, roles=ADMIN),
    _action("cancel", "cancel", "Cancel the job: a pending, delayed or buried one ends "
            "cancelled at once; a started one is flagged `cancel_requested`, its worker stops "
            "it within about a second (its next heartbeat) and it ends cancelled, never "
            "retried (with `lease`: its worker reports it stopped it). 409 "
            "invalid_transition for a job that ended.", m.Cancel, roles=READ),
    # -- the rest of the REST API ------------------------------------------------------------
    Operation(
        "GET", f"{QUEUE}/jobs/next", rest.NextJob, "peek", READ,
        "Peek the job of a status that comes next, without taking it (404 job_not_found "
        "when none).", {200: Answer("The job.", "Job")}, query=m.PeekQuery,
    ),
    Operation(
        "GET", f"{QUEUE}/jobs/stream", jobstream.JobStream, "jobStream",
        PRODUCER,
        "WebSocket job stream: each message is a body of POST /queues/{name}/jobs (with an "
        "optional `ref`), answered in order with {ref, status, job | jobs} or {ref, status, "
        "error, message} (see docs/rest-api.rst).", SWITCHING, query=m.StreamQuery,
        websocket=True, token_in_query=True,
    ),
    Operation(
        "GET", JOB, rest.JobView, "get", READ, "Read one job (its result once finished).",
        {200: Answer("The job.", "Job")},
    ),
    Operation(
        "GET", f"{JOB}/explain", explaining.JobExplain, "explain", READ,
        "Why the job is (not) running, in words and fields: delayed until when, how many "
        "jobs are ahead of it, whether any worker takes from its queue, its lease, why it "
        "was buried.", {200: Answer("The job's situation.", "Explanation")},
    ),
    Operation(
        "PATCH", JOB, rest.JobView, "update", WORKER,
        "Merge fields into the job; with `lease`, extend the lease too.", THE_JOB,
        errors=(400, 404, 409), body=m.UpdateFields, query=m.LeaseQuery,
    ),
    Operation(
        "DELETE", JOB, rest.JobView, "delete", ADMIN, "Delete the job whatever its state.",
        {200: Answer("The job as it was.", "Job")},
    ),
    Operation(
        "GET", QUEUE, rest.Queue, "queue_settings", ADMIN,
        "The queue's settings and statistics.", {200: Answer("Settings and stats.", "QueueDetail")},
    ),
    Operation(
        "PUT", QUEUE, rest.Queue, "create_queue", PRODUCER,
        "Create the queue with these settings (idempotent).",
        {201: Answer("Created with these settings.", "QueueConfig"),
         200: Answer("It existed; its settings, unchanged.", "QueueConfig")},
        errors=(400,), body=m.QueueSettings,
    ),
    Operation(
        "PATCH", QUEUE, rest.Queue, "update_queue", ADMIN,
        "Change any subset of the queue's settings; jobs already put keep theirs.",
        {200: Answer("The new settings.", "QueueConfig")}, body=m.QueueSettings,
    ),
    Operation(
        "DELETE", QUEUE, rest.Queue, "drop_queue", ADMIN, "Drop the queue and every job in it.",
        {200: Answer("How many jobs went.", "Deleted")},
    ),
    Operation(
        "POST", f"{QUEUE}/truncate", rest.QueueTruncate, "truncate", ADMIN,
        "Remove every job of the queue; the queue stays.",
        {200: Answer("How many jobs went.", "Deleted")},
    ),
    Operation(
        "GET", f"{QUEUE}/stats", rest.QueueStatsView, "stats", MONITOR,
        "Jobs per status and this dispatcher's event counters.",
        {200: Answer("The statistics.", "QueueStats")},
    ),
    Operation(
        "GET", f"{QUEUE}/history", rest.QueueHistoryView, "history", MONITOR,
        "Per-minute counts of the queue's events (put, taken, finished, failed, ...) "
        "between `since` and `until` (default: the last hour), summed over every "
        "dispatcher of the store and kept across restarts (see docs/observability.rst).",
        {200: Answer("The minutes with events.", "QueueHistory")}, query=m.HistoryQuery,
    ),
    Operation(
        "POST", f"{QUEUE}/kick", rest.QueueKick, "kick", ADMIN,
        "Kick up to `bound` buried jobs (delayed ones when none is buried) to pending; with "
        "`status`, jobs of that status only (failed jobs are kicked only so). Buried and "
        "failed jobs get their attempts renewed.",
        {200: Answer("How many were kicked.", "Kicked")}, body=m.Kick,
    ),
    # -- pause and resume (issue #25) ---------------------------------------------------------
    Operation(
        "POST", f"{QUEUE}/pause", rest.QueuePause, "pause", ADMIN,
        "Pause the queue for `for` seconds, or until resumed (no body): takes hand out none "
        "of its jobs (long-polls wait), puts are still accepted. A pause under way is "
        "replaced.", {200: Answer("Its settings after (paused, paused_until).", "QueueConfig")},
        body=m.Pause,
    ),
    Operation(
        "POST", f"{QUEUE}/resume", rest.QueueResume, "resume", ADMIN,
        "End the queue's pause (nothing changes if it is not paused); waiting takes get its "
        "jobs at once.", {200: Answer("Its settings after.", "QueueConfig")},
    ),
    Operation(
        "GET", SCHEDULES, schedules.Schedules, "list_schedules", ADMIN,
        "The queue's schedules of periodic jobs, by name.",
        {200: Answer("The schedules.", "ScheduleList")},
    ),
    Operation(
        "POST", SCHEDULES, schedules.Schedules, "create_schedule", ADMIN,
        "Create a schedule: the job each tick makes, and either `cron` (read in "
        "`timezone`) or `every` seconds. Every dispatcher fires it; each tick makes exactly "
        "one job. A bad cron expression or time zone, or both of `cron` and `every`, is a "
        "400 naming the field.",
        {201: Answer("The schedule.", "Schedule")}, errors=(400, 404, 409),
        body=m.NewSchedule, body_required=True,
    ),
    Operation(
        "GET", SCHEDULE, schedules.Schedule, "get_schedule", ADMIN, "The schedule.",
        {200: Answer("The schedule.", "Schedule")},
    ),
    Operation(
        "DELETE", SCHEDULE, schedules.Schedule, "delete_schedule", ADMIN,
        "Delete the schedule; the jobs it made stay.",
        {200: Answer("The schedule as it was.", "Schedule")},
    ),
    Operation(
        "POST", f"{SCHEDULE}/pause", schedules.SchedulePause, "pause_schedule", ADMIN,
        "Pause the schedule: no tick fires until it is resumed.",
        {200: Answer("The schedule.", "Schedule")},
    ),
    Operation(
        "POST", f"{SCHEDULE}/resume", schedules.ScheduleResume, "resume_schedule", ADMIN,
        "Resume the schedule: its next tick is the first after now (the ticks of the pause "
        "are not caught up).", {200: Answer("The schedule.", "Schedule")},
    ),
    Operation(
        "POST", f"{SCHEDULE}/run", schedules.ScheduleRun, "run_schedule", PRODUCER,
        "Make the schedule's job now, outside its ticks (an id of its own).",
        {201: Answer("The job made.", "Job")},
    ),
    Operation(
        "GET", "/stats", rest.DispatcherStatsView, "dispatcher_stats", MONITOR,
        "Every queue's statistics, and their sums.",
        {200: Answer("The statistics.", "DispatcherStats")}, errors=(),
    ),
    Operation(
        "GET", "/queues", rest.Queues, "list_queues", READ,
        "List every queue with its settings.", {200: Answer("The queues, by name.", "QueueList")},
        errors=(),
    ),
    Operation(
        "POST", "/workers/{worker}/heartbeat", workers.WorkerHeartbeat, "heartbeat", WORKER,
        "A worker's heartbeat (every few seconds): who it is, what it runs; answered with "
        "what an operator asked of it. `activity: stopped` drops it from the registry.",
        {200: Answer("The command for the worker, if any.", "HeartbeatAnswer")},
        errors=(400,), body=m.Heartbeat, body_required=True,
    ),
    Operation(
        "GET", "/workers", workers.Workers, "list_workers", ADMIN,
        "The workers seen in the last 5 minutes, with their state (running, quiet, "
        "stopping, or lost: no heartbeat for 15 s), what each runs and its totals.",
        {200: Answer("The workers, by id.", "WorkerList")}, errors=(400,),
        query=m.WorkersQuery,
    ),
    Operation(
        "POST", "/workers/{worker}/quiet", workers.WorkerQuiet, "quiet_worker", ADMIN,
        "Ask the worker to take no more jobs (those running finish); it learns it at its "
        "next heartbeat.", {200: Answer("The worker.", "Worker")},
    ),
    Operation(
        "POST", "/workers/{worker}/stop", workers.WorkerStop, "stop_worker", ADMIN,
        "Ask the worker to shut down gracefully (as on SIGTERM); it learns it at its next "
        "heartbeat.", {200: Answer("The worker.", "Worker")},
    ),
    Operation(
        "POST", "/take", taking.TakeAny, "take_any", WORKER,
        "Take up to `count` jobs of the first of the `queue` queues (in the order given) "
        "that has pending jobs, waiting up to `wait` seconds for a job in any of them. The "
        "jobs all come from one queue; an empty list when none came. 404 if a queue does "
        "not exist (nothing is taken).", TAKEN, query=m.TakeAnyQuery,
    ),
    Operation(
        "GET", "/take/stream", takestream.TakeStream, "takeStream", WORKER,
        "WebSocket take stream: each message is a take {queues, count, wait, worker, ref}, "
        "as POST /take makes; each is answered, in the order they end, with {ref, status, "
        "jobs} or {ref, status, error, message} (see docs/rest-api.rst).", SWITCHING,
        errors=(), websocket=True,
    ),
)  # fmt: skip
