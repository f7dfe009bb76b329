"""A multi-node Ray cluster on this machine, for trying a cluster setup before renting one.

``local_ray_cluster()`` starts a head node and worker nodes with Ray's own CLI
(``ray start``), as on real machines, and yields the address a driver joins
with ``RayExecutor(address=...)``. The driver must run in a process started with
the yielded environment: ``ray start --head`` turns on token authentication,
and Ray reads ``RAY_AUTH_MODE`` once per process.

The cluster is isolated from any other Ray instance on the machine: its own
ports, its own session folder and its own token; stopping it stops its nodes'
process groups, never ``ray stop`` (which would stop every instance, other
people's included). A node that does not start raises ``RayStartError`` with
Ray's own output.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator

# Ray's CLI through this interpreter: works whether or not its script is on PATH.
_RAY_COMMAND = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


class RayStartError(RuntimeError):
    """A node of the local cluster did not start; the message holds Ray's own output."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 when asked."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_ray_cluster(nodes: int = 2, cpus_per_node: int = 1,
                      start_timeout_s: float = 300) -> Iterator[tuple[str, dict[str, str]]]:
    """``(address, env)`` of a head node and ``nodes - 1`` worker nodes; stopped on exit.

    Run the driver with ``env`` (it carries the cluster's token) and pass
    ``address`` to ``RayExecutor``.
    """
    if nodes < 1 or cpus_per_node < 1:
        raise ValueError(f"nodes={nodes} and cpus_per_node={cpus_per_node} must be at least 1")
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0")
    # Short: Ray's Unix sockets live in it, and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    groups: list[int] = []  # each node's `ray start` runs in a session of its own

    def ray_start(*args: str) -> None:
        process = subprocess.Popen([*_RAY_COMMAND, "start", *args, f"--num-cpus={cpus_per_node}",
                                    # Defaults (10001, 52365, ...) would collide with another instance.
                                    f"--dashboard-agent-listen-port={free_port()}",
                                    f"--metrics-export-port={free_port()}"],
                                   env=env, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        groups.append(process.pid)
        output, _ = process.communicate(timeout=start_timeout_s)
        if process.returncode != 0:
            raise RayStartError(f"ray start {' '.join(args)} failed (exit {process.returncode}):\n{output}")

    try:
        ray_start("--head", f"--port={address.split(':')[1]}", f"--ray-client-server-port={free_port()}",
                  f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats")
        for _ in range(nodes - 1):
            ray_start(f"--address={address}")
        yield address, env
    finally:
        stop_process_groups(groups)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_process_groups(groups: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM to every process of the groups, then SIGKILL to what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(group) for group in groups):
            time.sleep(0.2)


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
