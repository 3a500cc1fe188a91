"""The dashboard's HTTP routes (Starlette): pages, their JSON API, server-sent events for live updates, the
live log, ``/metrics`` and the static assets. Read-only: every route is a GET.

Bad input gets a page (or JSON) that says what was wrong (``params``): an unknown job or worker is a 404, a
malformed id or filter a 400, anything unexpected a 500 with no stack trace (it is logged here instead).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fluster.dashboard import api, job_pages, logtail, pages, prom
from fluster.dashboard.html import layout
from fluster.dashboard.params import (
    BadRequest,
    found,
    job_filters,
    job_id_param,
    problem_response,
    tail_size,
    worker_id_param,
)
from fluster.dashboard.view import ClusterView
from fluster.protocol.messages import JobState
from fluster.protocol.subjects import Subjects

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
COALESCE_S = 0.25  # changes that come together are announced together
KEEPALIVE_S = 15.0  # an idle event stream sends a comment this often (so a closed browser is noticed)

Handler = Callable[[Request], Awaitable[Response]]


def build_app(view: ClusterView, nc: NATS, subjects: Subjects, stopping: anyio.Event) -> Starlette:
    """The ASGI app over ``view``; ``nc`` reads logs; event streams end when ``stopping`` is set."""
    ns = view.namespace

    def page(
        title: str, active: str, topics: tuple[str, ...], body: str, request: Request, after: str = ""
    ) -> Response:
        if request.query_params.get("fragment"):
            return HTMLResponse(body)
        return HTMLResponse(layout(title, active, body, topics, ns, after))

    async def overview(request: Request) -> Response:
        return page(
            "Overview", "/", ("jobs", "workers", "actors", "metrics"), pages.overview(api.summary(view)), request
        )

    async def jobs_page(request: Request) -> Response:
        state, prefix, offset, limit = job_filters(request)
        doc = api.jobs(view, state, prefix, offset, limit)
        body = job_pages.jobs(doc, state.value if state else None, prefix)
        return page("Jobs", "/jobs", ("jobs", "usage"), body, request)

    async def job_page(request: Request) -> Response:
        job_id = job_id_param(request)
        doc = found(api.job(view, job_id), "No such job", f"no job {job_id!r} in namespace {ns!r}")
        after = ""
        if not request.query_params.get("fragment"):
            tail = await logtail.read_tail(nc, subjects.logs_stream, subjects.logs(job_id), tail_size(request))
            after = job_pages.log_section(job_id, tail, JobState(doc["state"]).is_terminal)
        return page(f"Job {job_id}", "/jobs", ("jobs", "usage"), job_pages.job(doc), request, after)

    async def workers_page(request: Request) -> Response:
        return page(
            "Workers", "/workers", ("workers", "jobs", "usage", "metrics"), pages.workers(api.workers(view)), request
        )

    async def worker_page(request: Request) -> Response:
        worker_id = worker_id_param(request)
        if worker_id not in view.workers:
            raise BadRequest(404, "No such worker", f"no worker {worker_id!r} is registered in namespace {ns!r}")
        body = pages.worker(api.worker(view, worker_id))
        return page(f"Worker {worker_id}", "/workers", ("workers", "jobs", "usage", "metrics"), body, request)

    async def actors_page(request: Request) -> Response:
        return page("Actors", "/actors", ("actors", "metrics"), pages.actors(api.actors(view)), request)

    async def pools_page(request: Request) -> Response:
        return page("Pools", "/pools", ("metrics", "jobs"), pages.pools(api.pools(view)), request)

    # -- JSON -------------------------------------------------------------------------------------------

    async def api_summary(request: Request) -> Response:
        return JSONResponse(api.summary(view))

    async def api_jobs(request: Request) -> Response:
        state, prefix, offset, limit = job_filters(request)
        return JSONResponse(api.jobs(view, state, prefix, offset, limit))

    async def api_job(request: Request) -> Response:
        job_id = job_id_param(request)
        return JSONResponse(found(api.job(view, job_id), "No such job", f"no job {job_id!r} in namespace {ns!r}"))

    async def api_logs(request: Request) -> Response:
        job_id = job_id_param(request)
        found(view.jobs.get(job_id), "No such job", f"no job {job_id!r} in namespace {ns!r}")
        tail = await logtail.read_tail(nc, subjects.logs_stream, subjects.logs(job_id), tail_size(request))
        return JSONResponse(
            {
                "job_id": job_id,
                "total": tail.total,
                "truncated": tail.truncated,
                "last_seq": tail.last_seq,
                "lines": [{"seq": seq, **line.model_dump(mode="json")} for seq, line in tail.lines],
            }
        )

    async def api_workers(request: Request) -> Response:
        return JSONResponse(api.workers(view))

    async def api_worker(request: Request) -> Response:
        worker_id = worker_id_param(request)
        if worker_id not in view.workers:
            raise BadRequest(404, "No such worker", f"no worker {worker_id!r} is registered in namespace {ns!r}")
        return JSONResponse(api.worker(view, worker_id))

    async def api_actors(request: Request) -> Response:
        return JSONResponse(api.actors(view))

    async def api_pools(request: Request) -> Response:
        return JSONResponse(api.pools(view))

    async def metrics(request: Request) -> Response:
        return Response(prom.render(view), media_type=prom.CONTENT_TYPE)

    # -- live -------------------------------------------------------------------------------------------

    async def events(request: Request) -> Response:
        """``change`` events naming the topics that changed (coalesced), for pages to reload their content."""

        async def stream() -> AsyncIterator[str]:
            seen = view.changes.version
            yield f"event: hello\ndata: {json.dumps({'version': seen})}\n\n"
            while True:
                with anyio.move_on_after(KEEPALIVE_S) as idle:
                    await view.changes.wait(seen)
                if view.changes.closed:
                    return
                if idle.cancelled_caught:
                    yield ": keepalive\n\n"
                    continue
                await anyio.sleep(COALESCE_S)
                topics = view.changes.since(seen)
                seen = view.changes.version
                yield f"event: change\ndata: {json.dumps({'topics': topics, 'version': seen})}\n\n"

        return _sse(stream())

    async def log_stream(request: Request) -> Response:
        """``line`` events for a job's log lines after ``?after=SEQ``, as they are stored; ``end`` after an
        attempt's last line."""
        job_id = job_id_param(request)
        found(view.jobs.get(job_id), "No such job", f"no job {job_id!r} in namespace {ns!r}")
        try:
            after = max(0, int(request.query_params.get("after", "0")))
        except ValueError:
            raise BadRequest(400, "Bad request", "after must be a stream sequence number") from None

        async def stream() -> AsyncIterator[str]:
            yield ": following\n\n"
            async with logtail.follow(nc, subjects.logs(job_id), after) as lines:
                while True:
                    item = None
                    with anyio.move_on_after(KEEPALIVE_S):
                        item = await _first(lines.get(), stopping.wait())
                    if stopping.is_set():
                        return
                    if item is None:
                        yield ": keepalive\n\n"
                        continue
                    seq, line = item
                    data = {"seq": seq, "attempt": line.attempt, "stream": line.stream, "line": line.line[:10_000]}
                    yield f"event: {'end' if line.final else 'line'}\ndata: {json.dumps(data)}\n\n"

        return _sse(stream())

    routes = [
        Route("/", overview),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id:path}", job_page),
        Route("/workers", workers_page),
        Route("/workers/{worker_id}", worker_page),
        Route("/actors", actors_page),
        Route("/pools", pools_page),
        Route("/metrics", metrics),
        Route("/api/summary", api_summary),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs/{job_id:path}", api_job),
        Route("/api/logs/{job_id:path}", api_logs),
        Route("/api/logstream/{job_id:path}", log_stream),
        Route("/api/workers", api_workers),
        Route("/api/workers/{worker_id}", api_worker),
        Route("/api/actors", api_actors),
        Route("/api/pools", api_pools),
        Route("/api/events", events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return problem_response(request, exc.status, exc.title, exc.detail, ns)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = "Not found" if exc.status_code == 404 else "Bad request"
        detail = "there is no such page" if exc.status_code == 404 else str(exc.detail)
        return problem_response(request, exc.status_code, title, detail, ns)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request, 500, "Something went wrong", "the dashboard could not build this page; its log says why", ns
        )

    return Starlette(
        routes=routes,
        exception_handlers={BadRequest: bad_request, HTTPException: http_error, Exception: server_error},
    )


# -- helpers ----------------------------------------------------------------------------------------------


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _first(*waits: Awaitable[Any]) -> Any:
    """The result of whichever of ``waits`` finishes first; the others are cancelled."""
    result: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def run(wait: Awaitable[Any]) -> None:
            value = await wait
            if not result:
                result.append(value)
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(run, wait)
    return result[0] if result else None
