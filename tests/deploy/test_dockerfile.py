"""Each image's exact CMD and ENV (Dockerfile, FUNCTION=<name>), run in .venv, answer 200 on GET /.

The command runs in a private network namespace (unshare -n, as root here and in CI) so the
port written in the CMD (8080) is used as is, even while the local front door holds 8080.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dockerfile_cmd  # noqa: E402

REPO = dockerfile_cmd.REPO
DOCKERFILE = REPO / "Dockerfile"
FUNCTIONS = ["auth", "ingest", "process", "analytics", "retention", "alerts", "notify", "stream", "admin", "collector"]
# Values for the variables read without a default: the health route needs no backend, so
# nothing listens at these addresses.
SETTINGS = {
    "DATABASE_URL": "postgresql://esm:esm@127.0.0.1:1/esm",
    "REDIS_URL": "redis://127.0.0.1:2/0",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:3",
    "S3_ENDPOINT_URL": "http://127.0.0.1:4",
    "S3_ACCESS_KEY_ID": "test",
    "S3_SECRET_ACCESS_KEY": "test-secret",
    "JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789",
}


def _netns_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


NETNS = _netns_available()


def run_in_netns(function: str, dockerfile: Path) -> dict:
    env = {**os.environ, "DOCKERFILE_TEST_ENV": json.dumps(SETTINGS), "DOCKERFILE_TEST_NETNS": "1"}
    cmd = [sys.executable, str(HERE / "dockerfile_cmd.py"), function, str(dockerfile)]
    done = subprocess.run(["unshare", "-n", *cmd], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_parse_reads_the_final_cmd_and_env():
    image = dockerfile_cmd.parse(DOCKERFILE.read_text(), {"FUNCTION": "ingest"})
    assert image.cmd[0] == "functions-framework" and "--target=handle" in image.cmd
    assert image.env["FUNCTION"] == "ingest"
    assert int(image.env["WORKERS"]) >= 1 and int(image.env["THREADS"]) >= 1
    assert image.workdir == "/app/functions/ingest"
    assert image.user and not image.user.startswith(("0", "root"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_cmd_answers_200(function):
    if not (REPO / "functions" / function / "main.py").exists():
        pytest.skip(f"functions/{function}/main.py does not exist yet")
    if not NETNS:
        pytest.skip("unshare -n is not available (needs root): cannot run the CMD on its own port 8080")
    result = run_in_netns(function, DOCKERFILE)
    assert result["status"] == 200, result["output"]


@pytest.mark.skipif(not NETNS, reason="unshare -n is not available")
def test_a_broken_cmd_does_not_answer(tmp_path):
    """The check can fail: the same Dockerfile with a wrong --target never answers 200."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("--target=handle", "--target=no_such_function"))
    function = next(f for f in FUNCTIONS if (REPO / "functions" / f / "main.py").exists())
    result = run_in_netns(function, broken)
    assert result["status"] != 200
