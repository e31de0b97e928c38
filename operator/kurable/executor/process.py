"""One operator process's executor: its connections, the runs it drives, resync."""

from __future__ import annotations

from dataclasses import dataclass

from .drivers import Drivers
from .resync import Resync
from .runs import Run, run_drivers
from .runtime import EventQueue, Runtime
from .settings import OperatorSettings


@dataclass
class Executor:
    """Everything the operator's loops share, made at startup and closed at cleanup."""

    runtime: Runtime
    runs: Drivers[Run]
    """The runs this process drives, one task each."""
    resync: Resync | None
    """The periodic listing of Workflows; None when `resync_interval` is 0."""

    @property
    def settings(self) -> OperatorSettings:
        return self.runtime.settings

    @classmethod
    async def start(
        cls, settings: OperatorSettings, event_queue: EventQueue | None = None
    ) -> Executor:
        """Connect (etcd, the executor's lease, the API server) and start resync."""
        runtime = await Runtime.open(settings, event_queue)
        runs = run_drivers(runtime)
        resync = None
        if settings.resync_interval > 0:
            resync = Resync(runtime, runs)
            resync.start()
        return cls(runtime, runs, resync)

    async def stop(self) -> None:
        """Stop resync, then every run still driven (those resync adopted: kopf stops its
        own daemons), then close the connections."""
        if self.resync is not None:
            await self.resync.stop()
        await self.runs.stop_all()
        await self.runtime.close()
