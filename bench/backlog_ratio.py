"""How well a day-long backlog in the client's shape compresses: the measurement behind INGEST_MAX_DECOMPRESSION_RATIO.

Every sensor polled every 10 s for 24 h, each reading stamped by the client's `datetime.now().isoformat()`
(naive, microseconds) with the 19 reading fields the client sends, door states and extras (battery, LQI,
RSSI, voltage) constant; temperature, humidity and power drifting ("drifting") or constant too ("frozen",
the most compressible a real backlog gets). Serialised as the client does (json.dumps) and indented, then
gzipped at levels 9, 6 and 1. Prints one line per variant and the JSON per day (for the hourly budget).

    python bench/backlog_ratio.py [--equipments 6] [--hours 24]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import uuid
from datetime import datetime, timedelta

from uploads import client_item, client_reading

KINDS = (
    ("Temperatura", "temperature", "°C"),
    ("Porta", "door", ""),
    ("Umidade", "humidity", "%"),
    ("Energia", "power", "W"),
)


def backlog(equipments: int, hours: int, frozen: bool, step_s: int = 10, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 20, 0, 0, 0, 123456)
    items = []
    for number in range(equipments):
        name = f"Freezer {number + 1}"
        # The settings and radio figures of each sensor stay as first drawn; every poll changes its value and time.
        sensors = [
            client_reading(
                str(uuid.UUID(int=rng.getrandbits(128))),
                f"{name} {label}",
                kind,
                unit,
                "",
                "",
                f"0x00158d0000{rng.getrandbits(24):06x}",
                rng,
            )
            for label, kind, unit in KINDS
        ]
        temperature, humidity, power = -18.0, 60.0, 120.0
        readings = []
        for step in range(hours * 3600 // step_s):
            polled = start + timedelta(seconds=step * step_s, microseconds=rng.randint(0, 900))
            if not frozen:
                temperature += rng.choice((-0.1, 0.0, 0.0, 0.0, 0.1))
            states = {
                "temperature": f"{temperature:.1f}",
                "door": "off",
                "humidity": f"{humidity + (0 if frozen else rng.choice((-1, 0, 0, 1))):.0f}",
                "power": f"{power + (0 if frozen else rng.uniform(-5, 5)):.1f}",
            }
            for index, sensor in enumerate(sensors):
                stamp = (polled + timedelta(microseconds=37 * index)).isoformat()
                state = {"sensor_telemetria": states[sensor["sensor_tipo"]], "sensor_datahora_coleta": stamp}
                readings.append({**sensor, **state})
        items.append(client_item(str(uuid.UUID(int=rng.getrandbits(128))), name, readings, interval_s=step_s))
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--equipments", type=int, default=6, help="each with 4 sensors")
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    for frozen in (False, True):
        items = backlog(args.equipments, args.hours, frozen)
        readings = sum(len(item["sensor"]) for item in items)
        for indent in (None, 1, 4):
            text = json.dumps(items, indent=indent).encode()
            ratios = "  ".join(f"-{level} {len(text) / len(gzip.compress(text, level)):5.1f}:1" for level in (9, 6, 1))
            variant = "frozen" if frozen else "drifting"
            print(f"{variant:8} indent={indent!s:4} {readings} readings  {len(text) / 2**20:6.1f} MiB  {ratios}")


if __name__ == "__main__":
    main()
