"""Rounds, medians, ratios and the RESULTS.md section of the concurrency workloads."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from bench.concurrency import (
    MINIMAL_ASYNC,
    MINIMAL_THREADS,
    Contestant,
    Outcome,
    cpu_contestants,
    io_contestants,
    processes_supported,
    run_once,
)

DRAMATIQ_IO = "Dramatiq 1 process x 64 threads"
IO_ASYNC = "consumer-host async, pool 1 x concurrency 64"
IO_SYNC = "consumer-host sync, pool 1 x concurrency 64"
IO_OLD = "consumer-host sync, pool 64 (the old way)"
CPU_ONE, CPU_TWO = "consumer-host --processes 1", "consumer-host --processes 2"


@dataclass
class Row:
    """The rounds of one contestant, and its median."""

    contestant: Contestant
    outcomes: list[Outcome]
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and all(o.failure is None for o in self.outcomes)

    @property
    def rate(self) -> float:
        return statistics.median(o.rate for o in self.outcomes) if self.ok else 0.0

    def peak(self, name: str) -> int:
        return max((o.peak.get(name, 0) for o in self.outcomes), default=0)

    def cell(self) -> str:
        if self.skipped:
            return f"not run: {self.skipped}"
        failures = [o.failure for o in self.outcomes if o.failure]
        if failures:
            return f"**FAILED** ({len(failures)} of {len(self.outcomes)} rounds, see below)"
        rates = [o.rate for o in self.outcomes]
        return f"{self.rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def measure(work: str, n: int, repeats: int) -> list[Row]:
    """Rounds interleaved (every contestant once, then again): a burst of load from elsewhere
    on the shared machine then lands on every contestant alike instead of on one row."""
    contestants = io_contestants() if work == "io" else cpu_contestants()
    can_fork = processes_supported()
    rows = [Row(contestant, []) for contestant in contestants]
    for row in rows:
        if row.contestant.kind == "consumer-host" and row.contestant.processes > 1 and not can_fork:
            row.skipped = "`consumer-host run` has no --processes here"
    for round_ in range(1, repeats + 1):
        for row in rows:
            if row.skipped:
                continue
            contestant = row.contestant
            outcome = run_once(contestant, max(100, int(n * contestant.scale)), work)
            row.outcomes.append(outcome)
            shown = outcome.failure or f"{outcome.rate:>7.0f} msg/s"
            print(f"  {work:3} round {round_} {contestant.name:46} {shown}", flush=True)
    return rows


def _ratio(a: Row | None, b: Row | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or not b.rate:
        return None
    return a.rate / b.rate


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cpu(row: Row) -> float | None:
    """The median CPU ms per message (= CPU s per 1,000) of the row's rounds."""
    cpu = [o.cpu_per_1000 for o in row.outcomes if o.cpu_per_1000 is not None]
    return statistics.median(cpu) if cpu and row.ok else None


def _cpu_vs_minimal(row: Row, by_name: dict[str, Row]) -> float | None:
    if row.contestant.kind != "consumer-host":
        return None
    minimal = by_name.get(MINIMAL_ASYNC if row.contestant.style == "async" else MINIMAL_THREADS)
    ours, theirs = _cpu(row), _cpu(minimal) if minimal else None
    return ours / theirs if ours is not None and theirs else None


def render(work: str, rows: list[Row], n: int, repeats: int, when: str) -> str:
    by_name = {row.contestant.name: row for row in rows}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    versions = f"Versions: dramatiq {_version('dramatiq')}, celery {_version('celery')}, " + (
        f"redis-py {_version('redis')}."
    )
    if work == "io":
        lines = [
            "## I/O-bound: 10 ms handler + one Redis INCR, 64 in flight, RabbitMQ",
            "",
            f"`python -m bench --workload io --io-n {n}` on {when}; load average at the end "
            f"{load} (2 cores shared with both brokers and other work). Median of {repeats} "
            "interleaved rounds (min-max); N per round: the fast rows N, the slow ones N/2 "
            "(a rate is measured, not a total), taken between the 10 % and 90 % marks. "
            "The ideal for 64 in flight is 6,400 msg/s. Threads and connections: the peak "
            "over the contestant's process tree (/proc); RabbitMQ "
            "connections as `rabbitmqctl list_connections` counts them.",
            "",
            versions,
            "",
            "| contestant | msg/s (min-max) | vs Dramatiq | of 6,400 ideal | CPU ms / msg "
            "| CPU vs minimal loop | threads | AMQP conns (rabbitmqctl) | Redis conns |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        dramatiq = by_name.get(DRAMATIQ_IO)
        for row in rows:
            rabbit = [o.rabbit_connections for o in row.outcomes if o.rabbit_connections]
            ideal = f"{row.rate / 6400:.2f}" if row.ok else "-"
            lines.append(
                f"| {row.contestant.name} | {row.cell()} | {_fmt(_ratio(row, dramatiq))} "
                f"| {ideal} | {_fmt(_cpu(row), 3)} | {_fmt(_cpu_vs_minimal(row, by_name))} "
                f"| {row.peak('threads')} | {row.peak('amqp')} ({max(rabbit, default='-')}) "
                f"| {row.peak('redis')} |"
            )
        lines += [
            "",
            "CPU ms / msg: user + system time of the contestant's whole process tree (/proc, "
            "sampled every 0.25 s) from the first sample that saw a handled message to the one "
            "that saw the N-th, divided by the messages in between: start-up excluded. CPU vs "
            "minimal loop: against the minimal kombu loop of the same style (async rows against "
            "kombu + asyncio, thread rows against kombu + 64 threads; bench/minimal.py).",
            "",
            *io_targets(by_name),
            *failures(rows),
        ]
    else:
        lines = [
            "## CPU-bound: 1 ms of pure Python + one Redis INCR per message, RabbitMQ",
            "",
            f"`python -m bench --workload cpu --cpu-n {n}` on {when}; load average at the end "
            f"{load} (2 cores shared with both brokers and other work). Median of {repeats} "
            "interleaved rounds (min-max), rate between the 10 % and 90 % marks (a child that "
            "boots later does not count against the pair). consumer-host runs a plain handler, "
            "concurrency 1, per process; Dramatiq (reference) its default 8 threads per process.",
            "",
            versions,
            "",
            "| contestant | msg/s (min-max) | vs 1 process of the same | CPU ms / msg "
            "| processes | threads |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            single = next(
                (
                    r
                    for r in rows
                    if r.contestant.kind == row.contestant.kind and r.contestant.processes == 1
                ),
                None,
            )
            lines.append(
                f"| {row.contestant.name} | {row.cell()} | {_fmt(_ratio(row, single))} "
                f"| {_fmt(_cpu(row), 3)} "
                f"| {row.peak('processes')} | {row.peak('threads')} |"
            )
        ratio = _ratio(by_name.get(CPU_TWO), by_name.get(CPU_ONE))
        lines += [
            "",
            f"- `--processes 2` >= 1.8x `--processes 1`: {_verdict(ratio, 1.8)}",
            *failures(rows),
        ]
    return "\n".join(lines) + "\n"


def failures(rows: list[Row]) -> list[str]:
    """One line per failed round: what the guard saw and the contestant's last words."""
    lines = []
    for row in rows:
        for index, outcome in enumerate(row.outcomes, 1):
            if outcome.failure:
                last = " / ".join(outcome.log_tail.strip().splitlines()[-3:])[-300:]
                lines.append(
                    f"- FAILED: {row.contestant.name}, round {index}: {outcome.failure}"
                    + (f"; its last output: `{last.replace('`', chr(39))}`" if last else "")
                )
    return ["", *lines] if lines else []


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "not measured"
    return f"{ratio:.2f}x, {'met' if ratio >= target else 'NOT met'}"


def io_targets(by_name: dict[str, Row]) -> list[str]:
    dramatiq = by_name.get(DRAMATIQ_IO)
    sync, old = by_name.get(IO_SYNC), by_name.get(IO_OLD)
    fewer = "not measured"
    if sync and old and sync.ok and old.ok:
        fewer_threads = sync.peak("threads") < old.peak("threads")
        fewer_conns = sync.peak("amqp") < old.peak("amqp")
        fewer = (
            f"{sync.peak('threads')} threads and {sync.peak('amqp')} AMQP connections against "
            f"{old.peak('threads')} and {old.peak('amqp')}: "
            f"{'met' if fewer_threads and fewer_conns else 'NOT met'}"
        )
    return [
        f"- async pool 1 x concurrency 64 >= 2x Dramatiq: "
        f"{_verdict(_ratio(by_name.get(IO_ASYNC), dramatiq), 2.0)}",
        f"- sync pool 1 x concurrency 64 >= 1.2x Dramatiq: {_verdict(_ratio(sync, dramatiq), 1.2)}",
        f"- sync concurrency 64 uses fewer threads and connections than pool 64: {fewer}",
    ]
