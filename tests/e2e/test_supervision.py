"""The local stack supervises what it starts: a function that dies comes back by itself, one stopped
on purpose stays stopped."""

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta

import pytest
import requests
from support.stack import ROOT, new_tenant, stack, upload, wait_for_batch

from easysmart.demo import demo_upload

pytestmark = pytest.mark.slow
RUN_DIR = ROOT / ".local" / "run"
SUPERVISOR_LOG = ROOT / ".local" / "log" / "supervisor.log"


def pid_file(service: str) -> int | None:
    try:
        return int((RUN_DIR / f"{service}.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError):
        return None


def status_of(service: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "infra/local/stack.sh"), "status"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.split()[0] == service)
    return line.split()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.5)


def healthy(port: str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/_/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_function_whose_master_is_killed_is_restarted_and_takes_uploads_again():
    tenant = new_tenant()
    token = tenant.device_token()
    killed = pid_file("process")
    assert killed is not None and status_of("process") == "running"

    os.kill(killed, signal.SIGKILL)  # the master only: its workers are orphaned and hold the port a moment

    wait_for(
        lambda: pid_file("process") not in (None, killed) and status_of("process") == "running",
        60,
        "the supervisor restarts process",
    )
    wait_for(lambda: healthy(os.environ["PROCESS_PORT"]), 60, "the new process answers")
    items = demo_upload(
        datetime.now().astimezone() - timedelta(minutes=30), "America/Sao_Paulo", minutes=2, equipments=1
    )
    batch_id = upload(token, items).json()["batch_id"]
    assert wait_for_batch(token, batch_id, timeout=120)["status"] == "done"
    assert '"service":"process","event":"restarted"' in SUPERVISOR_LOG.read_text()


def test_a_service_stopped_on_purpose_stays_stopped_until_started():
    stack("stop", "retention")
    try:
        # Several supervision rounds (SUPERVISE_INTERVAL_S, 2 s by default) pass without a restart.
        time.sleep(6)
        assert status_of("retention") == "stopped"
    finally:
        stack("start", "retention")
    assert status_of("retention") == "running"
