"""Tests that need a fresh TensorFlow process: devices and TF_CONFIG are fixed when
TensorFlow starts, so strategies over logical devices or local workers run in subprocesses."""

import json
import os
import socket
import subprocess


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child TensorFlow: quiet, no inherited TF_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_local_workers(argv: list[str], workers: int = 2, timeout: float = 600):
    """Runs ``argv`` as ``workers`` processes of one MultiWorkerMirroredStrategy cluster on
    loopback (worker i gets task index i in TF_CONFIG); returns (returncode, stdout, stderr)
    of each, in task order."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
    processes = [
        subprocess.Popen(
            argv,
            env=subprocess_env(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]
