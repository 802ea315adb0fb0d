"""The benchmark runner: `python -m bench [--quick|--full] [--only NAME,...] [--out FILE]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (
    baseline,
    codecs,
    faust_floor,
    fhir_intake,
    latency,
    many_medications,
    memory,
    pipeline,
    punctuality,
    quix_peer,
    recovery,
    scale_out,
)
from bench.harness import (
    FULL,
    QUICK,
    Context,
    machine,
    make_workdir,
    results,
    scaled,
    table,
)

Benchmark = Callable[[Context], Awaitable[None]]

# In this order: the baseline first, so every later ratio has its denominator.
BENCHMARKS: dict[str, Benchmark] = {
    "baseline": baseline.run,
    "faust-floor": faust_floor.run,
    "pipeline": pipeline.run,
    # After the pipeline: it prints medstream / peer from the pipeline's figure of this run.
    "quix-peer": quix_peer.run,
    # After the pipeline too: the same facts as FHIR records, compared with its figure.
    "fhir-intake": fhir_intake.run,
    "scale-out": scale_out.run,
    "latency": latency.run,
    "punctuality": punctuality.run,
    "codecs": codecs.run,
    "memory": memory.run,
    "recovery": recovery.run,
    "many-medications": many_medications.run,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    mode.add_argument("--full", action="store_true", help="the issue's sizes (long)")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        or os.environ.get("MEDSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="host:port of the broker (default: KAFKA_BOOTSTRAP_SERVERS, "
        "MEDSTREAM_BOOTSTRAP_SERVERS, 127.0.0.1:9092)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the mode's sizes (e.g. 0.05 for the CI smoke run); figures then only "
        "show that everything still runs",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the temp data dirs")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    compared_with_pipeline = {"quix-peer", "fhir-intake"}
    if compared_with_pipeline & set(chosen) and "pipeline" not in chosen:
        chosen.insert(0, "pipeline")  # compared with medstream's pipeline in the same run
    throughput = {"pipeline", "faust-floor", "quix-peer", "scale-out", "fhir-intake"}
    if throughput & set(chosen) and "baseline" not in chosen:
        chosen.insert(0, "baseline")  # a throughput figure is meaningless without its ceiling
    mode = "full" if args.full else "quick"
    context = Context(
        bootstrap_servers=args.bootstrap_servers,
        mode=mode,
        sizes=scaled(FULL if args.full else QUICK, args.scale),
        workdir=make_workdir(),
        scale=args.scale,
    )
    started = time.monotonic()
    details = await machine(args.bootstrap_servers)
    errors: dict[str, str] = {}
    try:
        for name in (n for n in BENCHMARKS if n in chosen):
            began = time.monotonic()
            print(f"-- {name} ...", flush=True)
            try:
                await BENCHMARKS[name](context)
            except Exception as error:  # one broken benchmark must not hide the others
                errors[name] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            context.add(name, "benchmark duration", time.monotonic() - began, "s")
    finally:
        if not args.keep_data:
            shutil.rmtree(context.workdir, ignore_errors=True)
    document = results(context, details, started, errors)
    document["benchmarks"] = [n for n in BENCHMARKS if n in chosen]
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print()
    scale = "" if args.scale == 1 else f" (sizes x{args.scale:g})"
    print(f"medstream bench, {mode} mode{scale}, {document['date']}")
    print(
        f"{details['cpu_model']} x{details['cpu_count']}, Python {details['python']}, "
        f"faust-streaming {details['faust_streaming']}, aiokafka {details['aiokafka']}"
    )
    print(table(context.figures))
    for name, lines in context.notes.items():
        for line in lines:
            print(f"  [{name}] {line}")
    for name, failure in errors.items():
        print(f"  [{name}] FAILED: {failure}")
    print(f"results: {args.out} ({document['duration_seconds']} s)")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
