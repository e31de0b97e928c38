"""One operator process's executor: its connections, the runs and schedules it drives,
resync, and what it does when the replicas sharing the work change."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .consumers import ConsumerDrivers, consumer_drivers
from .drivers import Drivers
from .resync import Resync
from .runs import run_drivers
from .runtime import EventQueue, Runtime
from .schedules import ScheduleDrivers, schedule_drivers
from .settings import OperatorSettings

log = logging.getLogger("kurable.shards")


@dataclass
class Executor:
    """Everything the operator's loops share, made at startup and closed at cleanup."""

    runtime: Runtime
    runs: Drivers
    """The runs this process drives (one task each while acting) and parks."""
    resync: Resync | None
    """The periodic listing of Workflows; None when `resync_interval` is 0."""
    schedules: ScheduleDrivers
    """The Schedules this process drives, one task each."""
    consumers: ConsumerDrivers
    """The Consumers this process drives, one task each."""

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
        executor = cls(runtime, runs, resync, schedule_drivers(runtime), consumer_drivers(runtime))
        runtime.shards.on_change(executor.members_changed)
        return executor

    def owns(self, uid: str) -> bool:
        """Whether this replica drives run `uid`: consult it wherever a run would start
        being driven (kurable.executor.shards)."""
        return self.runtime.shards.owns(uid)

    async def members_changed(self, before: frozenset[str], now: frozenset[str]) -> None:
        """The replicas sharing the runs changed: let go of the runs another replica owns
        now, driven or parked (`Drivers.disown`: each run's owner key is handed to its new
        owner's live incarnation, which holds it at once), and start the unfinished runs this
        replica owns now and does not drive yet (`Resync.take_owned`: one listing)."""
        gone = await self.runs.disown()
        if gone:
            log.info("handed %d runs over to other replicas", len(gone))
        schedules = await self.schedules.disown()
        if schedules:
            log.info("handed %d schedules over to other replicas", schedules)
        consumers = await self.consumers.disown()
        if consumers:
            log.info("handed %d consumers over to other replicas", consumers)
        if self.resync is not None:
            taken = await self.resync.take_owned()
            if taken:
                log.info("took %d runs over from other replicas", taken)

    async def stop(self) -> None:
        """Stop resync, then every run still driven and the timers, then close the
        connections (parked runs keep their journal; the next start drives them again)."""
        if self.resync is not None:
            await self.resync.stop()
        await self.runs.stop_all()
        await self.schedules.stop_all()
        await self.consumers.stop_all()
        await self.runtime.close()
