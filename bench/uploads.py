"""Uploads in the real client's format for benchmarks, sized by readings or by gzip bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import struct
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import orjson

from easysmart.claimsig import ClaimKeyring, blob_metadata
from easysmart.events import ClaimCheck
from easysmart.storage import BlobStore

KINDS = (
    ("Temperatura", "temperature", "°C"),
    ("Porta", "door", ""),
    ("Umidade", "umidade", "%"),
    ("Energia", "power", "W"),
)
NAMESPACE = uuid.UUID("0b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c8d")


def blob_key(tenant_id: str, batch_id: str) -> str:
    """Where ingest would store the batch (raw/<UTC date>/<tenant>/<batch>.json.gz), so blob expiry removes it."""
    return f"raw/{datetime.now(timezone.utc):%Y/%m/%d}/{tenant_id}/{batch_id}.json.gz"


def stage_blob(
    blobs: BlobStore,
    keyring: ClaimKeyring,
    tenant_id: str,
    account_id: str,
    device: str,
    body: bytes,
    decompressed_bytes: int | None,
    traceparent: str | None = None,
) -> ClaimCheck:
    """Stores a gzip body where ingest would and returns its claim check, signed as ingest signs it."""
    batch_id = str(uuid.uuid4())
    key = blob_key(tenant_id, batch_id)
    claim = keyring.sign(
        ClaimCheck(
            batch_id,
            tenant_id,
            account_id,
            device,
            blobs.bucket,
            key,
            len(body),
            decompressed_bytes,
            hashlib.sha256(body).hexdigest(),
            "gzip",
            None,
            None,
            "bench",
            datetime.now(timezone.utc).isoformat(),
            traceparent,
        )  # fmt: skip
    )
    blobs.put(key, io.BytesIO(body), blob_metadata(claim))
    return claim


def client_reading(
    sensor_uuid: str, name: str, kind: str, unit: str, value: str, stamp: str, hardware_id: str, rng: random.Random
) -> dict:
    """One reading with the ~20 fields the client sends, its radio and battery figures drawn from `rng`."""
    return {
        "sensor_uuid": sensor_uuid,
        "sensor_nome": name,
        "sensor_status": "ATIVO",
        "sensor_tipo": kind,
        "sensor_unidade": unit,
        "sensor_telemetria": value,
        "sensor_datahora_coleta": stamp,
        "sensor_bateria_pct": float(rng.randint(60, 100)),
        "sensor_sinal_lqi": float(rng.randint(90, 160)),
        "sensor_sinal_rssi": float(rng.randint(-80, -40)),
        "sensor_voltagem_bateria": round(rng.uniform(2.8, 3.1), 2),
        "sensor_voltagem": None,
        "sensor_corrente": None,
        "sensor_potencia": None,
        "sensor_fabricante": "Aqara",
        "sensor_modelo": "WSDCGQ11LM",
        "sensor_firmware": "N/A",
        "sensor_id_hardware": hardware_id,
        "sensor_via_hub": True,
    }


def client_upload(
    readings: int,
    seed: int = 0,
    equipments: int = 6,
    end: datetime | None = None,
    values_seed: int | None = None,
    distinct_times: bool = False,
) -> list[dict]:
    """About `readings` readings ending at `end` (naive local time, as the client sends it), a
    reading every ~10 s per sensor with the jitter and noise of real sensors, so it compresses
    about as the client's uploads do (~15-50:1). `seed` names the sensors; `values_seed` (default:
    `seed`) draws the values, so one installation's successive uploads can differ. An equipment's
    sensors share each step's time unless `distinct_times`: then every reading has its own, as the
    client's `datetime.now().isoformat()` stamps each one (microseconds apart at least)."""
    rng = random.Random(seed if values_seed is None else values_seed)
    end = end or datetime.now() - timedelta(minutes=5)
    per_sensor = max(1, readings // (equipments * len(KINDS)))
    items = []
    for number in range(equipments):
        name = f"Freezer {number + 1}"
        sensors = [
            (str(uuid.uuid5(NAMESPACE, f"{seed}/{name}/{label}")), f"{name} {label}", kind, unit)
            for label, kind, unit in KINDS
        ]
        temperature = -18.0 + rng.random()
        sensor_list = []
        for step in range(per_sensor):
            taken = end - timedelta(seconds=10 * (per_sensor - step) + rng.random())
            stamp = taken.isoformat(timespec="microseconds")
            temperature += rng.uniform(-0.05, 0.05)
            values = (
                f"{temperature:.2f}",
                "on" if rng.random() < 0.02 else "off",
                f"{rng.uniform(40, 90):.1f}",
                f"{rng.uniform(80, 160):.1f}",
            )
            for position, ((sensor_uuid, sensor_name, kind, unit), value) in enumerate(zip(sensors, values)):
                if distinct_times:
                    stamp = (taken + timedelta(microseconds=1 + position * 1_000 + rng.randrange(1_000))).isoformat()
                sensor_list.append(
                    client_reading(sensor_uuid, sensor_name, kind, unit, value, stamp, f"0x00158d0000{number:06x}", rng)
                )
        items.append(client_item(str(uuid.uuid5(NAMESPACE, f"{seed}/{name}")), name, sensor_list))
    return items


def client_item(equip_uuid: str, name: str, readings: list[dict], interval_s: int = 10) -> dict:
    """One equipment object as the client sends it, with its readings."""
    return {
        "equip_uuid": equip_uuid,
        "equip_nome": name,
        "equip_local": "Loja",
        "equip_status": "ATIVO",
        "equip_intervalo_coleta": interval_s,
        "equip_sirene_ativa": "NÃO",
        "equip_sirete_tempo": 120,
        "sensor": readings,
    }


def sized_for_gzip(target_bytes: int, seed: int = 0, distinct_times: bool = False) -> tuple[list[dict], bytes, bytes]:
    """(items, JSON text, gzip body): the largest upload whose gzip body stays within target_bytes."""
    readings, best = 2_000, None
    while True:
        items = client_upload(readings, seed, distinct_times=distinct_times)
        text = orjson.dumps(items)
        body = gzip.compress(text, 6)
        if len(body) > target_bytes:
            if best is None:
                raise SystemExit(f"{readings} readings already compress to more than {target_bytes} bytes")
            return best
        best = (items, text, body)
        growth = 0.99 * target_bytes / len(body)
        if growth < 1.01:
            return best
        readings = int(readings * min(4.0, growth))


def unique_variant(body: bytes, tag: int) -> bytes:
    """The same upload as a different blob: an empty gzip member whose header comment is `tag`
    goes first, so the duplicate check does not short-cut the request."""
    header = b"\x1f\x8b\x08\x10" + struct.pack("<I", 0) + b"\x00\xff" + f"bench-{tag}".encode() + b"\x00"
    empty = zlib.compressobj(6, zlib.DEFLATED, -15)
    return header + empty.compress(b"") + empty.flush() + struct.pack("<II", 0, 0) + body
