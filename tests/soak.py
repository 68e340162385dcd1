"""A soak through the whole pipeline: steady call load with random outcomes, barges and hangups."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from pathlib import Path

from tests.payloads import job
from tests.pipeline import Pipeline

#: Outcomes drawn for side 0 / side 1, by the simulator's magic number endings ("" answers).
ENDINGS = ["", "", "", "", "", "0486", "0404", "0503", "0408"]


def rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (dramatiq forks its worker processes)."""
    total = 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            total += sum(rss_kib(int(child)) for child in children)
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        pass
    return total


def memory(pipeline: Pipeline) -> dict[str, int]:
    assert pipeline.stack is not None
    return {child.name: rss_kib(child.proc.pid) for child in pipeline.stack.children}


@dataclasses.dataclass
class SoakReport:
    calls: int
    barges: int
    hangups: int
    memory_start: dict[str, int]
    memory_end: dict[str, int]

    def lines(self) -> list[str]:
        out = [f"soak: {self.calls} calls, {self.barges} barges, {self.hangups} hangups"]
        for name, start in self.memory_start.items():
            end = self.memory_end.get(name, 0)
            out.append(f"  {name:10s} RSS {start / 1024:7.1f} MiB -> {end / 1024:7.1f} MiB ({end - start:+d} KiB)")
        return out


def number(rng: random.Random, base: str) -> str:
    ending = rng.choice(ENDINGS)
    return base[: len(base) - len(ending)] + ending if ending else base[:-4] + f"{rng.randrange(1000, 9999)}"


def run_soak(pipeline: Pipeline, rate: float, seconds: float, warmup: float = 3.0, seed: int = 7) -> SoakReport:
    """Offer ``rate`` calls/s for ``seconds``; barge or hang up some answered calls; return what happened.

    Memory is first sampled after ``warmup`` seconds of load, once every process has imported and connected.
    """
    rng = random.Random(seed)
    prefix = f"soak{time.monotonic_ns()}_"
    controls: list[threading.Timer] = []
    counts = {"barges": 0, "hangups": 0}
    start_memory: dict[str, int] = {}
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds + warmup:
        if not start_memory and time.monotonic() - started >= warmup:
            start_memory = memory(pipeline)
        due = int((time.monotonic() - started) * rate) + 1
        while sent < due:
            dial_id = f"{prefix}{sent}"
            caller, callee = number(rng, "15105550000"), number(rng, "14155550000")
            pipeline.client.rpush(
                pipeline.settings.jobs_key,
                json.dumps(job(dial_id=dial_id, user_id=dial_id, caller_number=caller, callee_number=callee)),
            )
            controls += schedule_controls(pipeline, rng, dial_id, counts)
            sent += 1
        time.sleep(0.005)
    for timer in controls:
        timer.join(10)
    return SoakReport(sent, counts["barges"], counts["hangups"], start_memory, memory(pipeline))


def schedule_controls(
    pipeline: Pipeline, rng: random.Random, dial_id: str, counts: dict[str, int]
) -> list[threading.Timer]:
    """Some calls get a barge then a whisper; most get a hangup after a random talk time."""
    timers = []
    if rng.random() < 0.2:
        counts["barges"] += 1
        timers.append(
            threading.Timer(
                0.4,
                pipeline.publish,
                args=(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "777-777-7777"}),
            )
        )
        timers.append(threading.Timer(0.9, pipeline.publish, args=(dial_id, {"type": "whisper"})))
    if rng.random() < 0.8:
        counts["hangups"] += 1
        timers.append(threading.Timer(rng.uniform(0.5, 1.5), pipeline.publish, args=(dial_id, {"type": "hangup"})))
    for timer in timers:
        timer.daemon = True
        timer.start()
    return timers
