"""The benchmark package's own mechanics, on fake runners and rows (no timing, no TensorFlow):
the interleaved rounds, the one table writer, the ratio columns and the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
# tools/bench.py finds the package beside itself; a test imports it the same way, then takes
# tools/ off the path again so that its scripts shadow nothing in other tests
sys.path.insert(0, str(TOOLS))
try:
    from benchmarks import cli, tables, timing, train_throughput
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
