"""The supervisor on trio: periodic work, a restart and shutdown, all on a manual clock."""

from __future__ import annotations

import anyio
import pytest

from memwarden.errors import SupervisorError
from memwarden.supervisor import RestartPolicy, Supervisor
from memwarden.testing import ManualClock


def test_periodic_and_restart_on_trio() -> None:
    async def main() -> dict[str, object]:
        clock = ManualClock(0.0)
        ticks: list[float] = []
        attempts: list[float] = []
        cleaned = anyio.Event()

        async def sample() -> None:
            await anyio.lowlevel.checkpoint()
            ticks.append(clock())

        async def flaky() -> None:
            attempts.append(clock())
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")
            try:
                await anyio.sleep_forever()
            finally:
                cleaned.set()

        policy = RestartPolicy(backoff_initial=0.5, backoff_max=0.5)
        async with Supervisor(name="trio", clock=clock, sleep=clock.sleep) as sup:
            sup.start_periodic("sample", sample, 1.0)
            sup.start("flaky", flaky, policy=policy)
            for step, sleepers in ((0.5, 2), (0.5, 1), (1.0, 1)):
                await clock.advance_when_parked(step, sleepers=sleepers)
                await anyio.wait_all_tasks_blocked()  # let the woken tasks run first
            await clock.wait_for_sleepers(1)
            status = sup.status()
        assert cleaned.is_set()
        return {"ticks": ticks, "attempts": attempts, "status": status, "after": sup.status()}

    result = anyio.run(main, backend="trio")
    assert result["ticks"] == [0.0, 1.0, 2.0]
    assert result["attempts"] == [0.0, 0.5]
    status = result["status"]
    assert isinstance(status, dict)
    assert status["flaky"].state == "running" and status["flaky"].restarts == 1
    assert status["sample"].state == "sleeping" and status["sample"].next_run == 3.0
    after = result["after"]
    assert isinstance(after, dict)
    assert {s.state for s in after.values()} == {"stopped"}


def test_give_up_raise_on_trio() -> None:
    async def main() -> None:
        clock = ManualClock(0.0)

        async def doomed() -> None:
            raise ValueError("bad")

        policy = RestartPolicy(max_restarts=0, on_give_up="raise")
        async with Supervisor(name="trio", clock=clock, sleep=clock.sleep) as sup:
            sup.start("doomed", doomed, policy=policy)
            await anyio.sleep_forever()

    with pytest.raises(SupervisorError, match="'doomed' failed") as info:
        anyio.run(main, backend="trio")
    assert isinstance(info.value.__cause__, ValueError)
