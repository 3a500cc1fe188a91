"""Request/reply with typed messages: one way to send a request, answer it, and turn failures into our errors.

A request handler that raises gets an error reply (``Fluster-Error`` header + ``ErrorInfo``); a request that
does not decode gets a ``ProtocolError`` reply. Nothing a peer sends can stop the serving loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionDrainingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel

from fluster.errors import ClusterUnavailable, FlusterTimeout, ProtocolError, from_wire, to_wire
from fluster.protocol.codec import ERROR_HEADERS, decode, encode, is_error_reply
from fluster.protocol.messages import ErrorInfo

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


async def request(
    nc: NATS, subject: str, message: BaseModel, reply_model: type[Rep], *, timeout: float, what: str = ""
) -> Rep:
    """Send ``message`` to ``subject`` and decode the reply as ``reply_model``.

    Raises:
        ClusterUnavailable: nobody is subscribed to ``subject``.
        FlusterTimeout: no reply within ``timeout``.
        ProtocolError: the reply does not decode.
        Exception: whatever error the responder sent back, rebuilt by ``from_wire``.
    """
    try:
        msg = await nc.request(subject, encode(message), timeout=timeout)
    except NoRespondersError as exc:
        raise ClusterUnavailable(f"nothing answers {what or subject}") from exc
    except NatsTimeout as exc:
        raise FlusterTimeout(f"no reply from {what or subject} within {timeout:g}s") from exc
    except (ConnectionClosedError, ConnectionDrainingError) as exc:
        raise ClusterUnavailable(f"the connection to NATS is closed; cannot reach {what or subject}") from exc
    return decode_reply(msg, reply_model)


def decode_reply(msg: Msg, reply_model: type[Rep]) -> Rep:
    """Decode a reply, raising the remote error when it is an error reply."""
    if is_error_reply(msg.headers):
        raise from_wire(decode(msg.data, ErrorInfo))
    return decode(msg.data, reply_model)


async def respond(msg: Msg, message: BaseModel) -> None:
    if msg.reply:
        await msg.respond(encode(message))


async def respond_error(msg: Msg, exc: BaseException) -> None:
    if msg.reply:
        await msg._client.publish(msg.reply, encode(to_wire(exc)), headers=ERROR_HEADERS)


async def serve_requests(
    msg: Msg, model: type[Req], handler: Callable[[Req], Awaitable[BaseModel | None]], what: str
) -> None:
    """Decode one request and answer it with the handler's reply, or an error reply; never raises."""
    try:
        request_msg = decode(msg.data, model)
    except ProtocolError as exc:
        log.warning("malformed %s on %s: %s", what, msg.subject, exc)
        await _safe_error(msg, exc)
        return
    try:
        reply = await handler(request_msg)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        log.warning("%s failed: %r", what, exc)
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
        log.warning("cannot send error reply on %s: %r", msg.subject, send_exc)
