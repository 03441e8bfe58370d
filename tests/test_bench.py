"""The benchmark package's own mechanics, on fake runners and rows (no timing, no TensorFlow):
the interleaved rounds, the one table writer, the ratio columns, the command line, and the
BayesFlow peer's worker protocol against a fake worker (no BayesFlow)."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
# tools/bench.py finds the package beside itself; a test imports it the same way, then takes
# tools/ off the path again so that its scripts shadow nothing in other tests
sys.path.insert(0, str(TOOLS))
try:
    from benchmarks import (
        cli,
        density_quality,
        density_throughput,
        peers,
        tables,
        timing,
        train_throughput,
    )
finally:
    sys.path.remove(str(TOOLS))


class FakeRunner:
    """Records every block it is asked for in a shared log; block k of a runner takes
    ``seconds[k]`` (or 1 s)."""

    def __init__(self, name, log, seconds=(), fail=False):
        self.name, self.log, self.seconds, self.fail = name, log, list(seconds), fail
        self.blocks = 0

    def block(self, work):
        if self.fail:
            raise RuntimeError("no such kernel\n  on this machine")
        self.log.append(self.name)
        self.blocks += 1
        return self.seconds.pop(0) if self.seconds else 1.0


def test_interleaved_gives_every_system_every_round_in_rotating_order():
    log = []
    makers = {name: (lambda n=name: FakeRunner(n, log)) for name in "abc"}
    results = timing.interleaved(makers, work=10, repeats=4, label="fake")
    first, warm_up, rounds = log[:3], log[3:6], [log[6 + 3 * i : 9 + 3 * i] for i in range(4)]
    assert first == warm_up == ["a", "b", "c"]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    for name in "abc":
        assert results[name]["runner"].blocks == 1 + 1 + 4
        assert len(results[name]["times_s"]) == 4


def test_interleaved_times_the_first_block_apart_and_records_failures():
    log = []

    def broken_maker():
        raise ValueError("cannot build")

    makers = {
        "slow-start": lambda: FakeRunner("slow-start", log, seconds=[9.0, 5.0, 2.0, 1.0, 4.0]),
        "broken": broken_maker,
        "fails-first-block": lambda: FakeRunner("x", log, fail=True),
    }
    results = timing.interleaved(makers, work=10, repeats=3, label="fake")
    assert results["broken"] == {"error": "ValueError: cannot build"}
    assert results["fails-first-block"] == {"error": "RuntimeError: no such kernel on this machine"}
    ok = results["slow-start"]
    assert ok["first_s"] == 9.0 and ok["times_s"] == [2.0, 1.0, 4.0]  # warm-up 5.0 not kept
    stats = timing.rate_stats(10, ok, "steps_per_s")
    assert stats["steps_per_s_by_round"] == [5.0, 10.0, 2.5]
    assert (stats["median_steps_per_s"], stats["min_steps_per_s"]) == (5.0, 2.5)
    assert stats["max_steps_per_s"] == 10.0 and stats["repeats"] == 3
    assert stats["compile_s"] == pytest.approx(9.0 - 10 / 5.0)


def test_interleaved_with_no_live_system():
    results = timing.interleaved({"x": lambda: FakeRunner("x", [], fail=True)}, 1, 3, "fake")
    assert "error" in results["x"]


def test_the_writer_writes_json_and_markdown_atomically(tmp_path, capsys):
    rows = [{"system": "nfzoo", "median_steps_per_s": 12.5}, {"system": "zuko", "error": "x"}]
    meta = {"machine": "test", "rows": rows}
    table = tables.markdown(["system", "steps/s"], [["nfzoo", "12.5"], ["zuko", "failed: x"]])
    tables.write(tmp_path, "bench", meta, table, "a title")
    assert json.loads((tmp_path / "bench.json").read_text()) == meta
    text = (tmp_path / "bench.md").read_text()
    assert text == (
        "a title\n\n| system | steps/s |\n|---|---|\n| nfzoo | 12.5 |\n| zuko | failed: x |\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]
    assert "| nfzoo | 12.5 |" in capsys.readouterr().out
    # a failed write replaces nothing and leaves nothing behind
    with pytest.raises(TypeError):
        tables.write(tmp_path, "bench", {"rows": {1, 2}}, "| new |", "new title")
    assert json.loads((tmp_path / "bench.json").read_text()) == meta
    assert (tmp_path / "bench.md").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]


def _rate_row(system, arch, by_round):
    result = {"times_s": [1 / r for r in by_round], "first_s": 3.0}
    row = timing.rate_stats(1.0, result, "steps_per_s")
    return {"arch": arch, "dim": 8, "system": system, **row}


def test_throughput_table_rows_and_the_plain_matmul_ratio():
    rows = [
        _rate_row("nfzoo", "maf", [10.0, 12.0, 11.0]),
        _rate_row("nfzoo-plain-matmul", "maf", [5.0, 6.0, 4.0]),
        _rate_row("zuko", "maf", [20.0, 24.0, 22.0]),
    ]
    text = train_throughput.throughput_table(rows)
    header, rule, line = text.splitlines()[:3]
    assert header == (
        "| flow | D | nfzoo (fit, XLA) | nfzoo (fit, XLA, plain matmul gradient) | zuko (torch) "
        "| nfzoo / fastest peer | nfzoo / nfzoo-plain-matmul |"
    )
    assert rule == "|" + "---|" * 7
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["maf", "8", "11.0 (10.0-12.0)", "5.0 (4.0-6.0)", "22.0 (20.0-24.0)"]
    assert cells[5] == "0.50 (vs zuko (torch); by round 0.50, 0.50-0.50)"
    assert cells[6] == (
        "2.20 (vs nfzoo (fit, XLA, plain matmul gradient); by round 2.00, 2.00-2.75)"
    )
    # without the plain-matmul system the table has no such column
    plain = train_throughput.throughput_table([rows[0], rows[2]])
    assert "plain-matmul" not in plain


def test_cells_show_errors_and_missing_ratios():
    assert tables.cell({"error": "E" * 200}, "u") == "failed: " + "E" * 120
    by = {"nfzoo": {"error": "x"}, "zuko": {"median_u": 1.0}}
    assert tables.ratio_cell(by, ["nfzoo", "zuko"], "u") == "-"
    assert tables.mean_se([]) == "-" and tables.mean_se([0.5]) == "0.5000"


def test_bench_help_runs_from_the_repo_root():
    result = subprocess.run(
        [sys.executable, "tools/bench.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for name in cli.modules():
        assert name in result.stdout


@pytest.mark.parametrize("name", list(cli.modules()))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_subcommand_help_as_a_script():
    result = subprocess.run(
        [sys.executable, "tools/bench.py", "train-throughput", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "nfzoo-plain-matmul" in result.stdout and "--no-memory" in result.stdout


# ---- BayesFlow's worker protocol, against a fake worker ----------------------------------

#: a stand-in for the BayesFlow interpreter: it logs its command line and every command to
#: $FAKE_BF_LOG, writes library noise on stdout, and answers as the worker does; a command
#: named in $FAKE_BF_FAIL is answered with an error
FAKE_WORKER = """
import json, os, sys
import numpy as np

log = open(os.environ["FAKE_BF_LOG"], "a")
log.write(json.dumps({"argv": sys.argv[1:]}) + "\\n")
fail = os.environ.get("FAKE_BF_FAIL", "")
if fail == "start":
    sys.stderr.write("ModuleNotFoundError: No module named 'bayesflow'\\n")
    raise SystemExit(1)
for line in sys.stdin:
    command = json.loads(line)
    log.write(line)
    log.flush()
    print("some library noise")
    cmd = command["cmd"]
    if cmd == "quit":
        break
    if cmd == fail:
        answer = {"error": "ValueError: boom"}
    elif cmd == "block":
        answer = {"seconds": 0.5}
    elif cmd == "log_prob":
        answer = {"log_prob": np.load(command["points"]).sum(1).tolist()}
    elif cmd == "time_log_prob":
        answer = {"seconds": 0.25 * command["calls"] * len(np.load(command["points"])) / 10}
    elif cmd == "time_sample":
        answer = {"seconds": 0.125 * command["calls"]}
    elif cmd == "info":
        answer = {"params": 10, "kernels": [[2, 16], [16, 4]], "jit_compile": "False"}
    elif cmd == "memory":
        answer = {"baseline_mib": 600.0, "peak_mib": 650.0}
    else:
        answer = {"error": f"ValueError: unknown command {cmd!r}"}
    print("@@" + json.dumps(answer), flush=True)
"""


@pytest.fixture
def fake_bayesflow(tmp_path, monkeypatch):
    """The path of a fake BayesFlow interpreter, and a function reading what it was sent."""
    python = tmp_path / "python"
    python.write_text(f"#!{sys.executable}\n{FAKE_WORKER}")
    python.chmod(0o755)
    log = tmp_path / "worker.log"
    monkeypatch.setenv("FAKE_BF_LOG", str(log))

    def sent():
        return [json.loads(line) for line in log.read_text().splitlines()]

    return str(python), sent


def _x(n=32, dim=2):
    return np.arange(n * dim, dtype=np.float32).reshape(n, dim) / (n * dim)


def test_bayesflow_peer_supports_the_coupling_flows_only():
    assert peers.supports("bayesflow", "realnvp") and peers.supports("bayesflow", "nsf")
    assert not peers.supports("bayesflow", "maf") and not peers.supports("bayesflow", "nsf-ar")
    with pytest.raises(ValueError, match="no flow of 'maf'"):
        peers.BayesFlowTrainer("maf", 2)


def test_bayesflow_trainer_sends_the_commands_and_parses_the_replies(fake_bayesflow):
    python, sent = fake_bayesflow
    x = _x()
    trainer = peers.BayesFlowTrainer("nsf", 2, x, hidden=[16, 16], python=python, threads=1)
    try:
        assert trainer.block(3) == 0.5
        argv = sent()[0]["argv"]
        with np.load(argv[argv.index("--data") + 1]) as f:  # the training stream, as given
            np.testing.assert_array_equal(f["x"], x)
        np.testing.assert_allclose(trainer.log_prob(x[:5]), x[:5].sum(1), rtol=1e-6)
        assert trainer.kernels == [(2, 16), (16, 4)]
        assert trainer.calls("log_prob", 10, x[:10]).block(2) == 0.5
        assert trainer.calls("sample", 7).block(4) == 0.5
        assert trainer.memory() == {"baseline_mib": 600.0, "peak_mib": 650.0}
    finally:
        trainer.close()
    start, *commands = sent()
    argv = " ".join(start["argv"])
    assert argv.startswith("-m benchmarks.bayesflow_worker --mode density --dim 2 --batch 512")
    for option in (
        "--depth 3 --transform spline --hidden 16 16 --permutation none --no-actnorm",
        "--activation relu --dropout 0 --bins 8 --bound 5.0",
        "--seed 0 --threads 1 --data ",
    ):
        assert option in argv
    names = [c["cmd"] for c in commands]
    assert names == ["block", "log_prob", "info", "time_log_prob", "time_sample", "memory", "quit"]
    assert commands[0]["steps"] == 3
    assert (commands[3]["calls"], commands[4]["n"], commands[4]["calls"]) == (2, 7, 4)
    # the affine flow has no spline options
    affine = peers.BayesFlowTrainer("realnvp", 2, None, python=python)
    affine.close()
    argv = " ".join(sent()[len(commands) + 1]["argv"])
    assert "--transform affine" in argv and "--bins" not in argv and "--data" not in argv


def test_bayesflow_worker_errors_become_row_errors(fake_bayesflow, monkeypatch):
    python, sent = fake_bayesflow
    monkeypatch.setenv("FAKE_BF_FAIL", "block")
    make = functools.partial(peers.BayesFlowTrainer, "realnvp", 2, _x(), python=python)
    results = timing.interleaved({"bayesflow": make}, work=2, repeats=1, label="fake")
    assert results == {"bayesflow": {"error": "RuntimeError: BayesFlow worker: ValueError: boom"}}
    assert sent()[-1] == {"cmd": "quit"}  # the failed runner's worker was ended
    # a worker that cannot start: its last words are the error
    monkeypatch.setenv("FAKE_BF_FAIL", "start")
    results = timing.interleaved({"bayesflow": make}, work=2, repeats=1, label="fake")
    error = results["bayesflow"]["error"]
    assert error.startswith("RuntimeError: the BayesFlow worker ended (exit code 1)")
    assert "No module named 'bayesflow'" in error


def test_train_throughput_runs_bayesflow_rounds_through_its_worker(fake_bayesflow):
    python, sent = fake_bayesflow
    rows, limit_rows, memory_rows = train_throughput.train_throughput(
        ["maf", "realnvp"], [2], 4, 2, ["bayesflow"], False, True, 0, python
    )
    assert limit_rows == []
    (row,) = rows  # no row for maf: BayesFlow has no such flow
    assert (row["arch"], row["system"], row["median_steps_per_s"]) == ("realnvp", "bayesflow", 8.0)
    assert row["steps_per_s_by_round"] == [8.0, 8.0] and row["kernels"] == [(2, 16), (16, 4)]
    assert row["flops_per_step"] == 3 * 2 * 512 * (2 * 16 + 16 * 4)
    assert memory_rows == [
        {
            "arch": "realnvp",
            "dim": 2,
            "system": "bayesflow",
            "baseline_mib": 600.0,
            "peak_mib": 650.0,
            "increment_mib": 50.0,
        }
    ]
    # first block, the warm-up round, 2 rounds; then a fresh worker for memory: 2 blocks
    names = [c.get("cmd") for c in sent() if "argv" not in c]
    assert names == ["block"] * 4 + ["info", "quit"] + ["block"] * 2 + ["memory", "quit"]


def test_density_throughput_times_bayesflow_calls_in_its_worker(fake_bayesflow):
    python, sent = fake_bayesflow
    rows = density_throughput.density_throughput(
        ["realnvp", "maf"], [2], 2, 1, 10, ["bayesflow"], python
    )
    assert [(r["arch"], r["task"]) for r in rows] == [
        ("realnvp", "log_prob"),
        ("realnvp", "sample"),
    ]
    assert rows[0]["median_points_per_s"] == 2 * 10 / 0.5
    assert rows[1]["median_points_per_s"] == 2 * 10 / 0.25
    assert rows[0]["bayesflow"]["params"] == 10
    commands = [c for c in sent() if "argv" not in c]
    assert [c["cmd"] for c in commands] == ["time_log_prob"] * 3 + ["info", "quit"] + [
        "time_sample"
    ] * 3 + ["info", "quit"]
    assert commands[0]["calls"] == 2 and commands[5]["n"] == 10


def test_tables_show_bayesflow_beside_the_others():
    rows = [
        _rate_row("nfzoo", "maf", [10.0, 12.0, 11.0]),
        _rate_row("zuko", "maf", [20.0, 24.0, 22.0]),
        _rate_row("nfzoo", "realnvp", [10.0, 12.0, 11.0]),
        _rate_row("zuko", "realnvp", [5.0, 6.0, 5.5]),
        _rate_row("bayesflow", "realnvp", [4.0, 6.0, 5.0]),
    ]
    text = train_throughput.throughput_table(rows)
    header, _, maf, realnvp = text.splitlines()[:4]
    assert header == (
        "| flow | D | nfzoo (fit, XLA) | zuko (torch) | BayesFlow (fit, graph) "
        "| nfzoo / fastest peer | nfzoo / bayesflow |"
    )
    maf_cells = [c.strip() for c in maf.strip("|").split("|")]
    assert maf_cells[4] == "" and maf_cells[6] == "-"  # no such flow: an empty cell
    assert maf_cells[5].startswith("0.50 (vs zuko (torch)")
    cells = [c.strip() for c in realnvp.strip("|").split("|")]
    assert cells[4] == "5.0 (4.0-6.0)"
    assert cells[5].startswith("2.00 (vs zuko (torch)")
    assert cells[6] == "2.20 (vs BayesFlow (fit, graph); by round 2.20, 2.00-2.50)"
    # the fastest peer may be BayesFlow
    faster = [*rows[:4], _rate_row("bayesflow", "realnvp", [40.0, 60.0, 50.0])]
    line = train_throughput.throughput_table(faster).splitlines()[3]
    assert "0.22 (vs BayesFlow (fit, graph)" in line

    def points(system, rate):
        stats = timing.rate_stats(1.0, {"times_s": [1 / rate], "first_s": 1.0}, "points_per_s")
        return {"arch": "realnvp", "dim": 8, "task": "log_prob", "system": system, **stats}

    density = [points("nfzoo", 10.0), points("bayesflow", 5.0)]
    text = density_throughput.density_table(density)
    assert "| BayesFlow (graph) | nfzoo / fastest peer | nfzoo / bayesflow |" in text

    quality = [
        {"system": s, "arch": "nsf", "seed": 0, "dim": 2, "kl": kl, "kl_se": 0.01, "train_s": 1.0}
        for s, kl in (("nfzoo", 0.1), ("zuko", 0.2), ("bayesflow", 0.3))
    ]
    last = density_quality.quality_table(quality).splitlines()[-1]
    assert last == (
        "| 2 | nsf | BayesFlow (fit, graph) | 0.3000 | 0.3000 +- 0.0100 | 1.0 | 0.1000 |"
    )


@pytest.mark.parametrize(
    "name", ["train-throughput", "density-throughput", "density-quality", "npe"]
)
def test_bayesflow_is_a_system_of_every_table(name):
    args = cli.build_parser().parse_args(
        [name, "--systems", "bayesflow", "--bayesflow-python", "/env/bin/python"]
    )
    assert args.systems == ["bayesflow"] and args.bayesflow_python == "/env/bin/python"
