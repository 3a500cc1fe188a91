"""Request/reply with typed messages: one way to send a request, answer it, and turn failures into our errors.

A request handler that raises gets an error reply (``Fluster-Error`` header + ``ErrorInfo``); a request that
does not decode gets a ``ProtocolError`` reply. Nothing a peer sends can stop the serving loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionDrainingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel

from fluster.bus.connection import permission_violations
from fluster.errors import (
    ClusterUnavailable,
    FlusterTimeout,
    NobodyListening,
    PermissionDenied,
    ProtocolError,
    from_wire,
    to_wire,
)
from fluster.protocol.codec import ERROR_HEADERS, decode, encode, is_error_reply
from fluster.protocol.messages import ErrorInfo

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)

MAX_ERROR_REPLY = 256 * 1024  # an error reply larger than this is cut (it must fit any server's max_payload)


async def request(
    nc: NATS, subject: str, message: BaseModel, reply_model: type[Rep], *, timeout: float, what: str = ""
) -> Rep:
    """Send ``message`` to ``subject`` and decode the reply as ``reply_model``.

    Raises:
        ClusterUnavailable: nobody is subscribed to ``subject``.
        PermissionDenied: the server refused this identity publishing to ``subject``.
        FlusterTimeout: no reply within ``timeout``.
        ProtocolError: the reply does not decode.
        ValueError: the request is larger than the server takes (too many environment variables, say).
        Exception: whatever error the responder sent back, rebuilt by ``from_wire`` (by type name, never
            unpickled).
    """
    data = encode(message)
    if len(data) > nc.max_payload:
        raise ValueError(
            f"the {type(message).__name__} for {what or subject} is {len(data)} bytes, more than the server "
            f"takes in one message ({nc.max_payload}); make it smaller (large values belong in the object store)"
        )
    try:
        msg = await nc.request(subject, data, timeout=timeout)
    except NoRespondersError as exc:
        raise NobodyListening(f"nothing answers {what or subject}") from exc
    except NatsTimeout as exc:
        refused = _refused(nc, subject)
        if refused is not None:  # a denied publish is dropped by the server, so it looks like silence
            raise PermissionDenied(f"NATS refused this identity the request to {what or subject}: {refused}") from exc
        raise FlusterTimeout(f"no reply from {what or subject} within {timeout:g}s") from exc
    except (ConnectionClosedError, ConnectionDrainingError) as exc:
        raise ClusterUnavailable(f"the connection to NATS is closed; cannot reach {what or subject}") from exc
    return decode_reply(msg, reply_model)


def _refused(nc: NATS, subject: str) -> str | None:
    """The server's permission violation for publishing to ``subject`` on ``nc``, if it reported one."""
    wanted = f'"{subject.lower()}"'
    return next((v for v in reversed(permission_violations(nc)) if "publish" in v and wanted in v.lower()), None)


def decode_reply(msg: Msg, reply_model: type[Rep]) -> Rep:
    """Decode a reply, raising the remote error when it is an error reply (rebuilt without unpickling: the
    responder, a worker say, must not be able to run code in the controller that asked)."""
    if is_error_reply(msg.headers):
        raise from_wire(decode(msg.data, ErrorInfo), unpickle=False)
    return decode(msg.data, reply_model)


async def respond(msg: Msg, message: BaseModel) -> None:
    if msg.reply:
        await msg.respond(encode(message))


async def respond_error(msg: Msg, exc: BaseException) -> None:
    if msg.reply:
        await msg._client.publish(msg.reply, encode_error(exc), headers=ERROR_HEADERS)


def encode_error(exc: BaseException, limit: int = MAX_ERROR_REPLY) -> bytes:
    """An error reply's body, cut to ``limit`` bytes: an error about a huge request must still fit a message."""
    data = encode(to_wire(exc))
    if len(data) <= limit:
        return data
    info = to_wire(exc)
    cut = limit // 4
    short = ErrorInfo(
        type_name=info.type_name[:256],
        message=_cut(info.message, cut),
        traceback=_cut(info.traceback, cut),
        code=info.code[:64],
    )
    return encode(short)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 40]}... ({len(text) - limit + 40} characters cut)"


class RateLimitedLog:
    """Logs a warning at most ``per_minute`` times a minute per kind; counts the rest and says how many."""

    def __init__(self, logger: logging.Logger, per_minute: int = 10) -> None:
        self._log = logger
        self._per_minute = per_minute
        self._window: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, logged, suppressed)

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._window.get(kind, (now, 0, 0))
        if now - start >= 60:
            if suppressed:
                self._log.warning("%d more %s warning(s) suppressed in the last minute", suppressed, kind)
            start, logged, suppressed = now, 0, 0
        if logged < self._per_minute:
            self._log.warning(message, *args)
            logged += 1
        else:
            suppressed += 1
        self._window[kind] = (start, logged, suppressed)


_warnings = RateLimitedLog(log)


async def serve_requests(
    msg: Msg, model: type[Req], handler: Callable[[Req], Awaitable[BaseModel | None]], what: str
) -> None:
    """Decode one request and answer it with the handler's reply, or an error reply; never raises."""
    try:
        request_msg = decode(msg.data, model)
    except ProtocolError as exc:
        _warnings.warning(f"malformed {what}", "malformed %s on %s: %s", what, msg.subject, str(exc)[:500])
        await _safe_error(msg, exc)
        return
    try:
        reply = await handler(request_msg)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        _warnings.warning(f"failed {what}", "%s failed: %s", what, repr(exc)[:500])
        await _safe_error(msg, exc)
        return
    if reply is not None:
        try:
            await respond(msg, reply)
        except Exception as exc:  # the requester may be gone; its retry covers it
            log.warning("cannot reply to %s: %r", what, exc)


async def _safe_error(msg: Msg, exc: BaseException) -> None:
    try:
        await respond_error(msg, exc)
    except Exception as send_exc:
        _warnings.warning("error reply", "cannot send error reply on %s: %r", msg.subject[:200], send_exc)
