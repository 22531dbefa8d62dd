"""CPU per wake-up of a 20 ms sleep loop: trio's sleep, trio on our timerfd, and a thread's sleep.

A voice stream wakes 50 times a second, so this is a floor under a single stream's CPU cost: the
part the event loop or the thread pays before a frame is even looked at. Each loop sleeps until
absolute 20 ms slots; CPU is ``time.process_time()`` over the loop, and lateness is how far past
its slot each wake-up came.

    .venv/bin/python benchmarks/wake_cost.py [--wakes 500]
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

from discore_voice._shell.voice.timerfd import open_timer

INTERVAL = 0.02


def report(name: str, cpu: float, late: list[float], wakes: int) -> None:
    late.sort()
    print(
        f"{name:<22} {cpu / wakes * 1e6:6.0f} µs CPU per wake"
        f"   late: median {statistics.median(late) * 1000:5.2f} ms, max {late[-1] * 1000:5.2f} ms"
    )


async def trio_sleep(wakes: int) -> None:
    await trio.sleep(0.1)
    late = []
    cpu, start = time.process_time(), trio.current_time()
    for index in range(1, wakes + 1):
        slot = start + index * INTERVAL
        await trio.sleep_until(slot)
        late.append(trio.current_time() - slot)
    report("trio.sleep_until", time.process_time() - cpu, late, wakes)


async def trio_timerfd(wakes: int) -> None:
    timer = open_timer()
    if timer is None:
        print("timerfd: not available here")
        return
    await trio.sleep(0.1)
    late = []
    cpu, start = time.process_time(), trio.current_time()
    try:
        for index in range(1, wakes + 1):
            slot = start + index * INTERVAL
            timer.arm(slot)
            await timer.wait()
            late.append(trio.current_time() - slot)
    finally:
        timer.close()
    report("trio on a timerfd", time.process_time() - cpu, late, wakes)


def thread_sleep(wakes: int) -> None:
    late = []
    cpu, start = time.process_time(), time.perf_counter()
    for index in range(1, wakes + 1):
        slot = start + index * INTERVAL
        time.sleep(max(0.0, slot - time.perf_counter()))
        late.append(time.perf_counter() - slot)
    report("thread time.sleep", time.process_time() - cpu, late, wakes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=500)
    args = parser.parse_args()
    trio.run(trio_sleep, args.wakes)
    trio.run(trio_timerfd, args.wakes)
    thread_sleep(args.wakes)


if __name__ == "__main__":
    main()
