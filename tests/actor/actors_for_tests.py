"""Actor classes the tests serve (importable by subprocess servers too)."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.lowlevel

from fluster.actor import ActorContext


class Boom(ValueError):
    """A user exception type that must come back as itself."""


class Calculator:
    def add(self, a: int, b: int = 0) -> int:
        return a + b

    async def mul(self, a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a * b

    def fail(self, message: str) -> None:
        raise Boom(message)

    def echo(self, value: object) -> object:
        return value

    def size(self, data: bytes) -> int:
        return len(data)

    def make(self, n: int) -> bytes:
        return b"x" * n

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def _private(self) -> str:
        return "secret"


class Named:
    """Answers with a fixed name, so callers can see which member served them."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    def who(self) -> str:
        if self.fail:
            raise Boom(f"{self.name} refuses")
        return self.name

    def vanish(self) -> None:
        """End the process at once, as a SIGKILL would: nothing withdraws its endpoint."""
        import os

        os._exit(1)


class Tracker:
    """Counts how many calls run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def work(self, seconds: float) -> int:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1
        return self.peak

    async def awork(self, seconds: float) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await anyio.sleep(seconds)
        self.running -= 1
        return self.peak


class Frontend:
    """Calls another actor through its context."""

    async def ask(self, ctx: ActorContext, a: int, b: int) -> tuple[str, int]:
        pool = await ctx.resolver.lookup("calc")
        return ctx.actor, await pool.call().add(a, b)

    def whoami(self, x: int, ctx: ActorContext) -> tuple[str, str, int]:
        return ctx.actor, ctx.endpoint_id, x


def serve_named_until_terminated(name: str) -> None:
    """A job entrypoint: serve ``Named(name)`` as actor "svc" until SIGTERM, then withdraw the endpoint."""
    import signal

    from fluster.actor import ActorServer
    from fluster.client.cluster import ClusterClient

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with ClusterClient.connect() as client:
                server = ActorServer(client)
                server.register("svc", Named(name))
                async with server:
                    async for _ in signals:
                        break

    anyio.run(main)
