"""Parse the repository's Dockerfile and run its exact CMD with its ENV, for one function.

Used by test_dockerfile.py. The image layout is mapped onto the work tree: /app is the
repository root, so WORKDIR /app/functions/<name> is functions/<name>/, and the programs the
image's pip installs come from the project's .venv (first on PATH).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Image:
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] = field(default_factory=list)
    user: str = ""


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def _expand(value: str, scope: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: scope.get(m.group(1) or m.group(2), ""), value)


def parse(text: str, build_args: dict[str, str]) -> Image:
    """The final stage's ARG/ENV/WORKDIR/USER/CMD, with build arguments expanded as docker does."""
    image = Image()
    for line in _logical_lines(text):
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        scope = {**image.args, **image.env}
        if instruction == "FROM":
            image = Image()
        elif instruction == "ARG":
            name, _, default = rest.partition("=")
            image.args[name] = build_args.get(name, default)
        elif instruction == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                if not sep:
                    raise ValueError(f"ENV {rest!r}: use the key=value form")
                image.env[key] = _expand(value, scope)
        elif instruction == "WORKDIR":
            image.workdir = os.path.join(image.workdir, _expand(rest, scope))
        elif instruction == "USER":
            image.user = rest
        elif instruction == "CMD":
            cmd = json.loads(rest)  # exec form: the only form that runs without a shell
            if not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
                raise ValueError(f"CMD {rest!r} is not in exec form")
            image.cmd = cmd
    return image


def _port(cmd: list[str], env: dict[str, str]) -> int:
    for i, arg in enumerate(cmd):
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
        if arg == "--port":
            return int(cmd[i + 1])
    return int(env.get("PORT", "8080"))


def run(image: Image, extra_env: dict[str, str], timeout_s: float = 60.0) -> tuple[int | None, str]:
    """Start the CMD in the mapped WORKDIR with the image's ENV; GET / until it answers.

    Returns (HTTP status or None, the process's output). Meant to run inside a private network
    namespace (see test_dockerfile.py), so the port in the CMD is the one used.
    """
    workdir = REPO / os.path.relpath(image.workdir, "/app")
    env = {
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        **image.env,
        **extra_env,
    }
    port = _port(image.cmd, env)
    proc = subprocess.Popen(image.cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    status = None
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    status = answer.status
                break
            except urllib.error.HTTPError as error:
                status = error.code
                break
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                time.sleep(0.3)
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    return status, output.decode(errors="replace")


if __name__ == "__main__":
    # python dockerfile_cmd.py FUNCTION DOCKERFILE_PATH: prints {"status": ..., "output": ...}.
    name, dockerfile = sys.argv[1], Path(sys.argv[2])
    image = parse(dockerfile.read_text(), {"FUNCTION": name})
    extra = json.loads(os.environ.get("DOCKERFILE_TEST_ENV", "{}"))
    if os.environ.get("DOCKERFILE_TEST_NETNS"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    status, output = run(image, extra)
    print(json.dumps({"status": status, "output": output[-4000:]}))
