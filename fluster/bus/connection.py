"""Connecting to NATS with the settings every fluster process wants (reconnect forever, fast ping, a name) and
the credentials and TLS of its ``ConnectOptions``."""

from __future__ import annotations

import contextlib
import logging
import ssl
import weakref
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client as NATS

from fluster.bus.options import ConnectOptions, nats_kwargs, redact_url, split_url
from fluster.errors import ClusterUnavailable, ConfigurationError
from fluster.security.identity import apply_identity
from fluster.security.renewal import follow_renewals

log = logging.getLogger(__name__)

_FIRST_CONNECT: dict[str, Any] = dict(  # nats-py annotates some of these int; floats work
    connect_timeout=2,
    reconnect_time_wait=0.2,
    max_reconnect_attempts=3,
    allow_reconnect=True,
    ping_interval=10,
    max_outstanding_pings=3,
)
ABANDON_S = 2.0
FIRST_CONNECT_S = 15.0  # per server: the first connect's tries (connect timeout 2 s, 4 tries) and TLS handshakes

HOW_TO_START = (
    "start a local cluster with `fluster up` and export the URL it prints as FLUSTER_URL, "
    "or pass url='nats://host:4222'"
)


async def connect(url: str, name: str, options: ConnectOptions | None = None, **extra: Any) -> NATS:
    """Connect to the NATS server(s) at ``url`` (comma-separated for a cluster) with ``options``' credentials
    and TLS (credentials written in the URL are used too; the options win).

    Raises:
        ClusterUnavailable: no server answered at ``url``, or it refused these credentials.
        ConfigurationError: the options cannot work (a missing TLS or creds file).
    """
    clean, in_url = split_url(url)
    options = apply_identity(in_url.merged(options or ConnectOptions()))
    servers = [part for part in clean.split(",") if part]
    kwargs = nats_kwargs(options)
    errors: list[Exception] = []

    first = anyio.CancelScope(deadline=anyio.current_time() + FIRST_CONNECT_S * len(servers))

    async def _error_cb(exc: Exception) -> None:
        if is_permission_violation(exc):  # the connection stays up: say what this identity may not do
            _violations.setdefault(nc, []).append(str(exc))
            log.warning("NATS refused connection=%s (%s): %s", name, options.describe(), exc)
            return
        errors.append(exc)
        log.info("nats error connection=%s: %s", name, exc)
        if not nc.is_connected and _refused(exc):
            first.cancel()  # refused credentials or certificates will not get better with retries

    nc = NATS()
    try:
        # the first connect gives up after a few tries per server (a wrong URL must fail, not hang); once
        # connected, reconnect forever: workers and controllers ride out server restarts. The deadline also
        # covers a nats-py quirk: a retry after a failed TLS handshake can wait forever.
        with first:
            await nc.connect(servers=servers, name=name, error_cb=_error_cb, **_FIRST_CONNECT, **kwargs, **extra)
        if first.cancelled_caught:
            raise TimeoutError(f"no connection within {FIRST_CONNECT_S * len(servers):g}s")
    except ConfigurationError:
        raise
    except Exception as exc:  # nats-py raises several unrelated types for "nothing there"
        with anyio.move_on_after(ABANDON_S, shield=True):  # closing a half-made TLS connection can hang
            await _abandon(nc)
        raise ClusterUnavailable(_explain(redact_url(clean), options, exc, errors)) from exc
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    if options.creds:  # an expiring identity (a job's) is renewed in its file: reconnect to each renewal
        follow_renewals(nc, options.creds)
    return nc


def is_permission_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing this connection's identity a subject (it stays connected)."""
    return "permissions violation" in str(exc).lower()


def permission_violations(nc: NATS) -> list[str]:
    """The permission violations the server reported on ``nc`` so far (oldest first)."""
    return list(_violations.get(nc, ()))


_violations: weakref.WeakKeyDictionary[NATS, list[str]] = weakref.WeakKeyDictionary()


async def _abandon(nc: NATS) -> None:
    """Close a client whose first connect failed, its socket included (nats-py leaves it open when a connect
    is cancelled while the server refuses the credentials)."""
    await nc.close()
    transport = getattr(nc, "_transport", None)
    if transport is not None:
        transport.close()
        with contextlib.suppress(Exception):
            await transport.wait_closed()


def _refused(exc: Exception) -> bool:
    return (
        isinstance(exc, ssl.SSLError | nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()
    )


def _explain(url: str, options: ConnectOptions, exc: Exception, errors: list[Exception]) -> str:
    """Why a first connect failed, in words: refused credentials and TLS trouble are not "nothing there"."""
    seen = " ".join(str(e) for e in [*errors, exc]).lower()
    how = f"connecting with {options.describe()}"
    if "authorization violation" in seen or "authentication" in seen:
        return (
            f"NATS at {url} refused the credentials ({how}); check --user/--password, --token, --creds or "
            "--nkey (or NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY, --context)"
        )
    if "certificate" in seen or "ssl" in seen or "tls" in seen:
        detail = next((str(e) for e in [*errors, exc] if "ssl" in str(e).lower() or "cert" in str(e).lower()), "")
        return (
            f"TLS with NATS at {url} failed ({how}): {detail or exc!r}; check --tlsca, --tlscert and --tlskey "
            "(NATS_CA, NATS_CERT, NATS_KEY)"
        )
    last = errors[-1] if errors else exc
    return f"cannot connect to NATS at {url} ({last!r}); {HOW_TO_START}"
