"""What the dispatcher's answers mean to a client: the decoded answer, or the typed error.

Every client decodes through here: :class:`~tqueues.client.aio.Client` and its blocking
twin an HTTP status and body (:func:`answer_of`), the WebSockets of
:mod:`tqueues.client.stream` an answer frame (:func:`frame_answer`), and a batch of
outcomes its per-item results (:func:`outcome_results`). An error answer becomes the
exception of :mod:`tqueues.errors` its JSON ``error`` code names (:data:`ERRORS`), with the
HTTP status in its details as ``status_code``. This module imports no other part of the
client, so the clients and their streams can all import it.
"""

from __future__ import annotations

from typing import Any

from tqueues import codec
from tqueues.errors import QueueNotFound, TqueuesError

#: A JSON object as the clients send and answer it.
JSONDict = dict[str, Any]


def _error_classes(root: type[TqueuesError] = TqueuesError) -> dict[str, type[TqueuesError]]:
    classes: dict[str, type[TqueuesError]] = {}
    for cls in root.__subclasses__():
        classes.setdefault(cls.code, cls)
        classes.update({k: v for k, v in _error_classes(cls).items() if k not in classes})
    return classes


#: The exception class of each error code the dispatcher answers with.
ERRORS = _error_classes()


def error_for(status: int, payload: Any) -> TqueuesError:
    """The typed exception for an HTTP error answer (``status_code`` in its details)."""
    if isinstance(payload, dict) and payload.get("error") in ERRORS:
        cls = ERRORS[payload["error"]]
        # A code means the same thing on both APIs; only the queue's status differs (501/404).
        if cls.status == status or issubclass(cls, QueueNotFound):
            details = {k: v for k, v in payload.items() if k not in ("error", "message")}
            return cls(payload.get("message"), status_code=status, **details)
    return TqueuesError(f"HTTP {status}: {payload}", status_code=status)


def answer_of(status: int, raw: bytes, *, is_json: bool, charset: str) -> Any:
    """The decoded answer of an HTTP status and body: JSON straight from the bytes, anything
    else (a proxy's error page) as text in ``charset``. Raises the typed error of a status
    of 400 or more (see :func:`error_for`)."""
    payload = codec.loads(raw) if is_json and raw else _text(raw, charset)
    if status < 400:
        return payload
    raise error_for(status, payload)


def _text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", "replace")


def frame_answer(answer: JSONDict, ok: tuple[int, ...]) -> JSONDict:
    """A WebSocket call's answer frame (``{"ref", "status", ...}``) when its ``status`` is
    one of ``ok``; else raises the typed error the rest of the frame names (see
    :func:`error_for`; a frame without a status counts as 500)."""
    if answer.get("status") in ok:
        return answer
    error = {k: v for k, v in answer.items() if k not in ("status", "ref")}
    raise error_for(answer.get("status", 500), error)


def outcome_results(answer: JSONDict) -> list[JSONDict | TqueuesError]:
    """The results of an outcomes answer (``{"results": [...]}``): each item's job (or its
    brief ``stored`` form), or the typed error of that item, returned in order."""
    results: list[JSONDict | TqueuesError] = []
    for item in answer["results"]:
        if "job" in item or "stored" in item:
            results.append(item.get("job") or item["stored"])
        else:
            error = dict(item["error"])
            results.append(error_for(int(error.pop("status", 0)), error))
    return results


__all__ = ["ERRORS", "JSONDict", "answer_of", "error_for", "frame_answer", "outcome_results"]
