"""Process throughput with and without the telemetry.stored outbox event, in alternating rounds.

Each round is one bench/process_batch.py run (its own interpreter, a fresh tenant and upload); rounds
alternate with and without the outbox so drift on a shared machine falls on both alike. Prints each
round and the medians; the issue allows the median to drop by at most 5 %.

    python bench/outbox_cost.py --rounds 5 --readings 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BATCH = Path(__file__).with_name("process_batch.py")


def one_round(readings: int, without_outbox: bool) -> dict:
    command = [sys.executable, str(BATCH), "--readings", str(readings)]
    child = subprocess.run(command + (["--without-outbox"] if without_outbox else []), capture_output=True, text=True)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--readings", type=int, default=200_000)
    args = parser.parse_args()
    rates: dict[str, list[int]] = {"with": [], "without": []}
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    for index in range(args.rounds):
        # Which goes first alternates too.
        for mode in ("without", "with") if index % 2 == 0 else ("with", "without"):
            measured = one_round(args.readings, mode == "without")
            rates[mode].append(measured["process_readings_per_s"])
            cpu[mode].append(measured["process_cpu_s"])
            print(json.dumps({"round": index + 1, "outbox": mode, **measured}), flush=True)
    with_outbox, without = statistics.median(rates["with"]), statistics.median(rates["without"])
    print(
        json.dumps(
            {
                "median_readings_per_s_with_outbox": with_outbox,
                "median_readings_per_s_without_outbox": without,
                "change_pct": round(100 * (with_outbox - without) / without, 1),
                "median_cpu_s_with_outbox": statistics.median(cpu["with"]),
                "median_cpu_s_without_outbox": statistics.median(cpu["without"]),
            }
        )
    )


if __name__ == "__main__":
    main()
