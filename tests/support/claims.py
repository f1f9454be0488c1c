from easysmart.events import ClaimCheck

TENANT_ID = "5a0f3c1e-0000-4000-8000-0000000000a1"
ACCOUNT_ID = "5a0f3c1e-0000-4000-8000-0000000000b1"
CLAIM = ClaimCheck(
    "5a0f3c1e-0000-4000-8000-000000000001",
    TENANT_ID,
    ACCOUNT_ID,
    "dev",
    "telemetry-raw",
    "raw/k.json.gz",
    10,
    20,
    "ab" * 32,
    "gzip",
    1,
    2,
    "req-1",
    "2026-11-20T10:00:00+00:00",
    "00-abc-def-01",
)
