"""Benchmarks: every speed figure nfzoo states comes from here, as medians of repeated,
interleaved measurements taken in one run (these machines are shared and noisy).

    .venv/bin/python tools/bench.py export-latency [--flows maf-moons realnvp-moons] [--repeats 7]
    .venv/bin/python tools/bench.py train-throughput [--dims 8 64] [--steps 20] [--repeats 5]
    .venv/bin/python tools/bench.py matmul-limit [--dims 8 64] [--steps 20] [--repeats 5]
    .venv/bin/python tools/bench.py dot-orientation [--dims 8 64] [--calls 20] [--repeats 7]
    .venv/bin/python tools/bench.py density-throughput [--dims 8 64] [--repeats 5]
    .venv/bin/python tools/bench.py density-quality [--archs maf nsf nsf-ar] [--dims 2 8]
    .venv/bin/python tools/bench.py glow-throughput [--steps 20] [--repeats 5] [--threads 1]
    .venv/bin/python tools/bench.py peak-memory --system nfzoo --arch maf --dim 8
    .venv/bin/python tools/bench.py npe [--tasks two-moons slcp] [--budget 10000]

``tools/bench.py SUBCOMMAND --help`` describes what each measures. The code is the package
tools/benchmarks/ (found beside this script, so no install of tools/ is needed): the timing
mechanism in timing.py, the systems compared in peers.py, one module per subcommand. Every
subcommand but peak-memory writes JSON and a Markdown table to ``--out`` (default
out/bench/).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.cli import main

if __name__ == "__main__":
    raise SystemExit(main(description=__doc__.splitlines()[0]))
