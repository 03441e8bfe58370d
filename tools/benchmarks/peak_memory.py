"""peak-memory: one system's training alone in this process; prints one JSON line with VmHWM
after the imports (nfzoo and all peers imported, so every system's baseline is the same
interpreter) and at the end. ``--system none`` gives the baseline alone. train-throughput
runs it in a fresh interpreter per system (``peak_memory``); BayesFlow, which runs in another
interpreter, is measured in a fresh worker of its own instead (``bayesflow_peak_memory``).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from .peers import (
    BAYESFLOW,
    TRAINED_SYSTEMS,
    BayesFlowTrainer,
    import_peers,
    make_trainer,
    mixture_sample,
)
from .timing import error_text, set_threads

COMMAND = "peak-memory"
HELP = "one system's training alone; prints peak RSS"
THREADS = True
#: prints its row instead of writing tables
WRITES_TABLES = False
#: the command line that runs this subcommand
BENCH = Path(__file__).resolve().parents[1] / "bench.py"


def add_arguments(p) -> None:
    in_process = [s for s in TRAINED_SYSTEMS if s != BAYESFLOW]
    p.add_argument("--system", required=True, choices=[*in_process, "none"])
    p.add_argument("--arch", default="maf", choices=["maf", "realnvp", "nsf", "nsf-ar"])
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is missing), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_memory_child(system: str, arch: str, dim: int, steps: int, threads: int = 0) -> dict:
    """In this process: imports, baseline, then the system's first block + one block."""
    import_peers()
    set_threads(threads)
    row = {"arch": arch, "dim": dim, "system": system, "baseline_mib": peak_rss_mib()}
    if system != "none":
        trainer = make_trainer(system, arch, mixture_sample(dim))
        trainer.block(steps)
        trainer.block(steps)
    row["peak_mib"] = peak_rss_mib()
    row["increment_mib"] = row["peak_mib"] - row["baseline_mib"]
    return row


def bayesflow_peak_memory(
    arch: str, dim: int, steps: int, threads: int = 0, python: str = "python"
) -> dict:
    """A fresh BayesFlow worker's first block + one block; its VmHWM after its imports
    (TensorFlow, Keras, BayesFlow: its own baseline) and at the end."""
    row = {"arch": arch, "dim": dim, "system": BAYESFLOW}
    try:
        trainer = BayesFlowTrainer(arch, dim, mixture_sample(dim), python=python, threads=threads)
        try:
            trainer.block(steps)
            trainer.block(steps)
            row.update(trainer.memory())
        finally:
            trainer.close()
    except Exception as e:
        return {**row, "error": error_text(e)}
    row["increment_mib"] = row["peak_mib"] - row["baseline_mib"]
    print(
        f"{arch} D={dim} {BAYESFLOW}: peak RSS {row['peak_mib']:.0f} MiB "
        f"(+{row['increment_mib']:.0f} over its worker's {row['baseline_mib']:.0f} after imports)"
    )
    return row


def peak_memory(
    system: str,
    arch: str,
    dim: int,
    steps: int,
    threads: int = 0,
    bayesflow_python: str = "python",
) -> dict:
    """``peak_memory_child`` in a fresh interpreter; its JSON line, or the error."""
    if system == BAYESFLOW:
        return bayesflow_peak_memory(arch, dim, steps, threads, bayesflow_python)
    cmd = [sys.executable, str(BENCH), "peak-memory", "--system", system]
    cmd += ["--arch", arch, "--dim", str(dim), "--steps", str(steps), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{arch} D={dim} {system}: peak RSS {row['peak_mib']:.0f} MiB "
            f"(+{row['increment_mib']:.0f} over {row['baseline_mib']:.0f} after imports)"
        )
        return row
    except subprocess.CalledProcessError as e:
        tail = " ".join(e.stderr.strip().splitlines()[-3:])
        return {"arch": arch, "dim": dim, "system": system, "error": tail[-300:]}
    except Exception as e:
        return {"arch": arch, "dim": dim, "system": system, "error": error_text(e)}


def run(args, meta=None) -> int:
    row = peak_memory_child(args.system, args.arch, args.dim, args.steps, args.threads)
    print(json.dumps(row))
    return 0
