"""fluster's exception tree, and the one place exceptions cross the wire (``to_wire`` / ``from_wire``).

::

    FlusterError
      ConfigurationError   bad settings: connection options, a natscli context, a file they name (a ValueError)
      ProtocolError        undecodable or unexpected message
      ClusterUnavailable   no responders / cannot connect
        NobodyListening    nothing was subscribed to the subject a request went to
        WorkerIdInUse      a live worker already registered this worker id
        NoStream           what was published went to a subject no stream stores (the stream is gone)
        NamespaceNotReady  the namespace's streams do not exist, and this identity may not create them
      PermissionDenied     the NATS server refused this identity an operation (a subject it may not use)
        UntrustedPayload   a job or call is unsigned, or signed by a key not trusted here (payload signing)
      FlusterTimeout       also a TimeoutError
        ReplyTimeout       no reply to a request in time (the mux's own; callers turn it into theirs)
      JobError
        JobNotFound
        JobAlreadyExists
        JobFailed          a job ended without a result (state, error, remote traceback)
          Unschedulable
      ActorError
        ActorNotFound
        ActorNameTaken     an exclusive registration found the name held (or held it against others)
        UnknownActorMethod also an AttributeError
        ActorCallTimeout   also a FlusterTimeout
        ActorDied          the actor's job ended while a call was in flight
        RemoteError        a remote exception whose type could not be rebuilt here
      TaskLost             a task's executor died more often than its retries allow
      TaskCancelled        a task was cancelled (``ctx.cancel``, ``future.cancel()``); also a CancelledError
      ObjectLost           a stored object is gone and cannot be rebuilt
      LeadershipLost       this controller no longer holds the lease: it stops acting and stands by
      EnvironmentBuildFailed  a job's environment (venv, workspace) could not be built (the installer's output)
        ImageBuildError    the Docker runtime's base image could not be built
      RuntimeStartError    an attempt could not start (no daemon, no image, no free GPU); also a RuntimeError

A user exception raised remotely comes back as its own type, with the remote traceback text attached as its
``__cause__`` (a ``RemoteTraceback``) and as ``remote_traceback``.
"""

from __future__ import annotations

import concurrent.futures
import traceback as _traceback
from typing import TYPE_CHECKING

import cloudpickle

if TYPE_CHECKING:
    from fluster.protocol.messages import ErrorInfo


class FlusterError(Exception):
    """Base of every error fluster raises."""


class ConfigurationError(FlusterError, ValueError):
    """Settings that cannot work: connection options, a natscli context, or a file they name."""


class ProtocolError(FlusterError):
    """A message could not be decoded, or was not what the receiver expected."""


class ClusterUnavailable(FlusterError):
    """Nothing answers: no NATS server, no controller, or no worker at the subject."""


class NobodyListening(ClusterUnavailable):
    """A request found nothing subscribed to its subject (the server said so at once: it is reachable)."""


class WorkerIdInUse(ClusterUnavailable):
    """The controller refused a worker's registration: a live worker already uses that worker id."""


class NoStream(ClusterUnavailable):
    """Chunks were published to a subject no stream stores (the stream is gone)."""


class NamespaceNotReady(ClusterUnavailable):
    """The namespace's buckets and streams do not exist yet, and this identity may not create them."""


class PermissionDenied(FlusterError):
    """The NATS server refused this identity an operation: a subject its role may not publish or subscribe to."""


class UntrustedPayload(PermissionDenied):
    """A job or an actor call that must be signed is not, or not by a trusted key, or not as it is now."""


class FlusterTimeout(FlusterError, TimeoutError):
    """An operation did not finish within its timeout."""


class ReplyTimeout(FlusterTimeout):
    """No reply arrived within the request's timeout."""


class JobError(FlusterError):
    """Base of errors about jobs."""


class JobNotFound(JobError, KeyError):
    """No job with that id exists in the namespace (a ``KeyError``, as Fray's cluster API raises)."""

    def __str__(self) -> str:  # the message as given, not KeyError's repr of it
        return Exception.__str__(self)


class JobAlreadyExists(JobError):
    """A different submission already created a job with that id."""


class JobFailed(JobError):
    """A job ended in a state that has no result (FAILED without exception, KILLED, WORKER_FAILED, ...)."""

    def __init__(self, message: str, *, job_id: str = "", state: str = "", error: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.error = error

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_job_failed, (type(self), str(self), self.job_id, self.state, self.error))


class Unschedulable(JobFailed):
    """No worker could take the job within its scheduling timeout."""


class ActorError(FlusterError):
    """Base of errors about actors."""


class ActorNotFound(ActorError, LookupError):
    """No server is serving that actor name (or endpoint)."""


class ActorNameTaken(ActorError):
    """The actor name is held by an exclusive registration, or an exclusive one found it already served."""


class UnknownActorMethod(ActorError, AttributeError):
    """The actor has no public method of that name."""


class ActorCallTimeout(ActorError, FlusterTimeout):
    """An actor call got no reply within its timeout."""


class ActorDied(ActorError):
    """The job serving an actor ended while a call to it was in flight: the call will never be answered."""


class RemoteError(ActorError):
    """A remote exception whose type cannot be rebuilt here; carries the type name and traceback text."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.remote_message, self.remote_traceback))


class TaskLost(FlusterError):
    """A task was lost with its executor (killed, worker lost) on every attempt its retries allowed."""


class TaskCancelled(FlusterError, concurrent.futures.CancelledError):
    """The task was cancelled before it finished: what ``get`` raises for it (and what a running task's thread
    sees raised in it, when cancelled cooperatively)."""


class ObjectLost(FlusterError, LookupError):
    """A stored object (a ``put`` value or a task's large output) is no longer in the object store: deleted
    with its owner, expired, or lost with its stream, and it has no lineage to re-run (or re-running failed)."""

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(message or f"object {key!r} is no longer in the object store")
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key, str(self)))


class LeadershipLost(FlusterError):
    """This controller's lease lapsed or another controller holds it: it must stop acting (and stand by)."""


class EnvironmentBuildFailed(FlusterError):
    """A job's environment could not be built; ``output`` holds the installer's output (its last lines)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.output))


class ImageBuildError(EnvironmentBuildFailed):
    """The base image could not be built (a missing tool, or docker refused the import)."""


class RuntimeStartError(FlusterError, RuntimeError):
    """An attempt could not start: no daemon, no image, an image whose Python does not match, no free GPU."""


class RemoteTraceback(Exception):
    """Carries the remote traceback text; set as ``__cause__`` so it prints above the local one."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _rebuild_job_failed(cls: type[JobFailed], message: str, job_id: str, state: str, error: str | None) -> JobFailed:
    return cls(message, job_id=job_id, state=state, error=error)


def to_wire(exc: BaseException, code: str = "error") -> ErrorInfo:
    """Turn an exception into an ``ErrorInfo``: type name, message, traceback text, and the pickled exception."""
    from fluster.protocol.messages import ErrorInfo

    tb = getattr(exc, "remote_traceback", None) if exc.__traceback__ is None else None
    text = tb or "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    own_tb = exc.__traceback__
    try:
        pickled: bytes | None = cloudpickle.dumps(exc.with_traceback(None))
    except Exception:  # an exception holding an unpicklable value still reaches the caller as RemoteError
        pickled = None
    finally:
        exc.with_traceback(own_tb)  # the caller keeps the traceback it had
    return ErrorInfo(
        type_name=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=str(exc),
        traceback=text,
        pickled=pickled,
        code=code,
    )


def from_wire(info: ErrorInfo, unpickle: bool = True) -> BaseException:
    """Rebuild the exception that ``to_wire`` described: its own type when it unpickles, else ``RemoteError``.

    ``unpickle=False`` (control-plane replies: a worker answering the controller, the controller answering a
    client) never unpickles what a peer sent, which could run code here: a fluster error or a common builtin
    comes back as its type with the message, anything else as ``RemoteError``."""
    exc: BaseException
    try:
        if not unpickle:
            loaded: object = _by_name(info)
        else:
            loaded = cloudpickle.loads(info.pickled) if info.pickled is not None else None
    except Exception:  # the type may not exist here (a class from the job's own modules)
        loaded = None
    if isinstance(loaded, BaseException):
        exc = loaded
    else:
        exc = RemoteError(info.type_name, info.message, info.traceback)
    if info.traceback:
        exc.__cause__ = RemoteTraceback(info.traceback)
        try:
            exc.remote_traceback = info.traceback  # type: ignore[attr-defined]
        except AttributeError:  # exceptions with __slots__ keep the traceback in __cause__ only
            pass
    return exc


_BUILTINS: dict[str, type[BaseException]] = {
    f"builtins.{cls.__name__}": cls
    for cls in (ValueError, TypeError, KeyError, LookupError, RuntimeError, TimeoutError, PermissionError)
}


def _by_name(info: ErrorInfo) -> BaseException | None:
    """The exception ``info`` names, built from its message alone (no unpickling), when it is one we know."""
    module, _, name = info.type_name.rpartition(".")
    found = globals().get(name) if module == __name__ else _BUILTINS.get(info.type_name)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        return None
    if module == __name__ and not issubclass(found, FlusterError):
        return None
    try:
        return found(info.message)
    except TypeError:  # a constructor that needs more than a message (RemoteError, ObjectLost)
        return None
