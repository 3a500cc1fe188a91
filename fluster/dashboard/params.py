"""What a dashboard request asks for: its job or worker id, the jobs filters and the log tail size, each
checked; and the answer to one that is bad (``BadRequest``: a 400 or 404 page, or JSON for the API).
The routes are ``app``'s.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from fluster.dashboard import pages
from fluster.dashboard.html import layout
from fluster.protocol.ids import validate_job_id, validate_name
from fluster.protocol.messages import JobState

DEFAULT_TAIL = 500


class BadRequest(Exception):
    """A request the dashboard cannot answer: its status, and the title and detail of the page that says so."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def problem_response(request: Request, status: int, title: str, detail: str, namespace: str) -> Response:
    """The answer to a bad request: JSON for the API (or a client that asks for it), else a page."""
    if (
        request.url.path.startswith("/api/")
        or "application/json" in request.headers.get("accept", "")
        and "text/html" not in request.headers.get("accept", "")
    ):
        return JSONResponse({"error": title, "detail": detail}, status_code=status)
    return HTMLResponse(layout(title, "", pages.problem(title, detail), (), namespace), status_code=status)


def found(doc: Any, title: str, detail: str) -> Any:
    """``doc``, or a 404 with ``title`` and ``detail`` when there is none."""
    if doc is None:
        raise BadRequest(404, title, detail)
    return doc


def job_id_param(request: Request) -> str:
    job_id = str(request.path_params["job_id"])
    try:
        return validate_job_id(job_id)
    except ValueError as exc:
        raise BadRequest(400, "Not a job id", str(exc)) from None


def worker_id_param(request: Request) -> str:
    worker_id = str(request.path_params["worker_id"])
    try:
        return validate_name(worker_id, "worker id")
    except ValueError as exc:
        raise BadRequest(400, "Not a worker id", str(exc)) from None


def job_filters(request: Request) -> tuple[JobState | None, str | None, int, int]:
    q = request.query_params
    state: JobState | None = None
    if q.get("state"):
        try:
            state = JobState(q["state"].upper())
        except ValueError:
            states = ", ".join(s.value for s in JobState)
            raise BadRequest(400, "Unknown state", f"unknown job state {q['state']!r}: use one of {states}") from None
    prefix = q.get("prefix") or None
    if prefix is not None and len(prefix) > 1024:
        raise BadRequest(400, "Prefix too long", "a job id prefix is at most 1024 characters")
    try:
        offset = int(q.get("offset", "0"))
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise BadRequest(400, "Bad request", "offset and limit must be whole numbers") from None
    return state, prefix, offset, limit


def tail_size(request: Request) -> int:
    try:
        return int(request.query_params.get("tail", str(DEFAULT_TAIL)))
    except ValueError:
        raise BadRequest(400, "Bad request", "tail must be a whole number of lines") from None
