"""Profile the pipeline benchmark's hot path: `python -m bench.profile` (pyinstrument), or
`python -m bench.profile --by-package` (cProfile, own time summed per package)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import shutil
from pathlib import Path

from pyinstrument import Profiler

from bench.harness import QUICK, Context, make_workdir
from bench.pipeline import measure, pipeline_records


def top_self_times(profiler: Profiler, count: int) -> list[tuple[tuple[str, str], float]]:
    """Where the time goes, summed per function over every call path (own time only)."""
    session = profiler.last_session
    assert session is not None
    totals: dict[tuple[str, str], float] = {}
    root = session.root_frame()
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic or frame.function is None:
            continue
        where = f"{Path(frame.file_path or '?').name}:{frame.line_no}"
        key = (frame.function, where)
        totals[key] = totals.get(key, 0.0) + frame.total_self_time
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:count]


async def profiled(args: argparse.Namespace) -> None:
    context = Context(args.bootstrap_servers, "profile", QUICK, make_workdir())
    records = pipeline_records(args.events, QUICK.doses_per_patient)
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        result = await measure(context, records)
    finally:
        profiler.stop()
        shutil.rmtree(context.workdir, ignore_errors=True)
    print(f"{result['eps']:.0f} events/s over {result['events']} events")
    args.html.write_text(profiler.output_html())
    if profiler.last_session is not None:
        profiler.last_session.save(str(args.html.with_suffix(".pyisession")))
    print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False))
    print("top functions by own time (s):")
    for (function, where), seconds in top_self_times(profiler, args.top):
        print(f"  {seconds:8.3f}  {function}  {where}")
    print(f"HTML profile: {args.html}")


def package_of(file_name: str, function: str) -> str:
    """Where a function lives: an installed package, a stdlib module, medstream's own
    package (``streams/agents``...), or the built-in object it is a method of."""
    if "site-packages/" in file_name:
        return file_name.split("site-packages/")[1].split("/")[0]
    if "/lib/python3" in file_name:
        return "stdlib:" + file_name.split("/lib/python3")[1].split("/")[1]
    if file_name == "~":
        return "builtin:" + function.split(" of ")[-1].strip("<>'")[:40]
    parts = Path(file_name).parts
    for root in ("streams", "bench"):
        if root in parts:
            index = parts.index(root)
            return "/".join(parts[index : index + 2])
    return file_name


async def by_package(args: argparse.Namespace) -> None:
    context = Context(args.bootstrap_servers, "profile", QUICK, make_workdir())
    records = pipeline_records(args.events, QUICK.doses_per_patient)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        result = await measure(context, records)
    finally:
        profiler.disable()
        shutil.rmtree(context.workdir, ignore_errors=True)
    print(f"{result['eps']:.0f} events/s over {result['events']} events (under cProfile)")
    stats = pstats.Stats(profiler)
    totals: collections.Counter[str] = collections.Counter()
    for (file_name, _line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        totals[package_of(file_name, function)] += entry[2]
    whole = sum(totals.values())
    print("own time by package (s, share):")
    for package, seconds in totals.most_common(args.top):
        print(f"  {seconds:7.2f} {100 * seconds / whole:5.1f}%  {package}")
    stats.sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--html", type=Path, default=Path("bench-profile.html"))
    parser.add_argument(
        "--by-package",
        action="store_true",
        help="cProfile instead of pyinstrument: own time summed per package, then functions",
    )
    args = parser.parse_args()
    asyncio.run(by_package(args) if args.by_package else profiled(args))


if __name__ == "__main__":
    main()
