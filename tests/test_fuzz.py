"""Fuzzing with hypothesis: whatever the command line, the bytes of an input file or the
contents of a config.json, the answer is a correct result or one clear error (exit status 1
or 2 and one line on stderr; a ValueError in Python), never a traceback, nothing
half-written, nothing of the user's deleted.

The default suite runs a few examples of each with tiny budgets (a training run is one or two
steps); ``-m slow`` runs many more, and also the commands that plot and export."""

import contextlib
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nfzoo
from nfzoo.arrays import TableError, open_table
from nfzoo.cli import main

FEW = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MANY = settings(FEW, max_examples=300, derandomize=False)
#: what commands may write or replace (with --overwrite: folders nfzoo wrote); cond/ is not
#: listed, so no command may write into the conditional flow's folder
NFZOO_OUTPUTS = ("saved/", "model/", "out", "new/", "p.", "e/")
TEMPORARY = re.compile(r"^\..*\.(partial|old)\.\d+\.")

# ---- a user's folder, which no command may damage -----------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    rng = np.random.RandomState(0)
    np.save(root / "x.npy", rng.normal(size=(40, 2)).astype(np.float32))
    np.savetxt(root / "x.csv", rng.normal(size=(30, 2)), delimiter=",", header="a,b", comments="")
    np.save(root / "wide.npy", rng.normal(size=(5, 3)))
    np.save(root / "nan.npy", np.array([[0.0, np.nan]]))
    np.save(root / "complex.npy", np.ones((3, 2), complex))
    (root / "empty.npy").write_bytes(b"")
    (root / "text.csv").write_text("a,b\n1,two\n")
    (root / "exists.csv").write_text("the user's\n")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("the user's")
    nfzoo.build("nice", 2, num_layers=2, hidden_units=[8]).save_pretrained(root / "saved")
    nfzoo.build("nsf", 2, context_dim=2, num_layers=2).save_pretrained(root / "cond")
    np.save(root / "c.npy", rng.normal(size=(1, 2)))
    np.save(root / "c40.npy", rng.normal(size=(40, 2)))  # one context per row of x.npy
    np.save(root / "c3.npy", rng.normal(size=(3, 2)))
    return root


def fingerprint(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- command lines ------------------------------------------------------------------------

NAMES = ["maf-moons", "maf-moon", "./saved", "saved", "mine", "nope/x", "", "..", "planar-u1"]
NAMES += ["cond", "cond", "maf-moons", "./saved", "./saved"]  # most names load
CONTEXTS = ["0.1,-0.2", "-1,2", "1", "1,2,3", "x", "nan,1", "c.npy", "c40.npy", "c3.npy", "cond"]
CONTEXTS += ["0.1,-0.2", "c40.npy"]
NUMBERS = ["0", "1", "3", "-1", "1.5", "nan", "inf", "1e309", "4294967296", "x", "", "150"]
INPUTS = ["x.npy", "x.csv", "wide.npy", "nan.npy", "complex.npy", "empty.npy", "text.csv"]
INPUTS += ["missing.npy", "mine", "exists.csv", "saved/config.json"]
OUTPUTS = ["out.npy", "out.csv", "out.txt", "exists.csv", "mine", "saved", ".", "new/o.npy"]
OUTPUTS += ["out.npy", "out.csv"]  # most outputs can be written
ARCHS = ["nice", "maf", "planar", "sylvester-orthogonal", "glow", "mafs", ""]


def optional(*args):
    return st.sampled_from([[], list(args)])


def flag(name, values):
    return st.one_of(st.just([]), st.sampled_from(values).map(lambda v: [name, v]))


name = st.sampled_from(NAMES)
number = st.one_of(st.sampled_from(NUMBERS), st.integers(-5, 10**5).map(str))
small = st.sampled_from(["1", "2", "5", "16", "0", "-2", "x", "2.5", "3", "7"])


def command_lines(slow: bool):
    commands = [
        st.tuples(st.just(["list"]), optional("maf-*"), flag("--kind", ["density", "vae", ""])),
        st.tuples(st.just(["info"]), name.map(lambda n: [n])),
        st.tuples(
            st.just(["sample"]),
            name.map(lambda n: [n]),
            small.map(lambda n: ["-n", n]),
            st.sampled_from(OUTPUTS).map(lambda o: ["-o", o]),
            flag("--seed", NUMBERS),
            flag("--context", CONTEXTS),
            optional("--overwrite"),
        ),
        st.tuples(
            st.just(["logprob"]),
            name.map(lambda n: [n]),
            st.sampled_from(INPUTS).map(lambda i: ["--input", i]),
            flag("--context", CONTEXTS),
            flag("-o", OUTPUTS),
            optional("--overwrite"),
        ),
        st.tuples(
            st.just(["train"]),
            st.sampled_from(ARCHS).map(lambda a: [a]),
            st.sampled_from(["moons", "moonz", *INPUTS]).map(lambda d: ["--data", d]),
            st.sampled_from([*OUTPUTS, "model"]).map(lambda o: ["--out", o]),
            st.sampled_from(["1", "2", "150", "0", "x"]).map(lambda s: ["--steps", s]),
            st.just(["--num-points", "64", "--batch-size", "16"]),
            flag("--lr", ["1e-3", "-1", "nan", "0", "1e30"]),
            flag("--val-fraction", ["0", "0.5", "-0.5", "1", "x"]),
            flag("--seed", NUMBERS),
            optional("--overwrite"),
        ),
        st.lists(st.sampled_from(["--x", "-n", "sample", "list", "=", "--help-me", "ü"])).map(
            lambda junk: (junk,)
        ),
    ]
    # command lines that mostly succeed, so that the results are checked too
    written = st.sampled_from(["out.npy", "out.csv", "new/o.npy"])

    def loads(contexts):  # a flow, with a context where it is conditional
        return st.one_of(
            st.sampled_from([["maf-moons"], ["./saved"]]),
            st.sampled_from(contexts).map(lambda c: ["cond", "--context", c]),
        )

    commands += [
        st.tuples(
            st.just(["sample"]),
            loads(["0.1,-0.2", "-1,2", "c.npy"]),
            st.sampled_from(["1", "3", "50"]).map(lambda n: ["-n", n]),
            written.map(lambda o: ["-o", o, "--overwrite"]),
            flag("--seed", ["0", "7"]),
        ),
        st.tuples(
            st.just(["logprob"]),
            loads(["0.1,-0.2", "-1,2", "c.npy", "c40.npy"]),
            st.sampled_from(["x.npy", "x.npy", "x.csv"]).map(lambda i: ["--input", i]),
            st.one_of(st.just([]), written.map(lambda o: ["-o", o, "--overwrite"])),
        ),
    ]
    if slow:
        commands += [
            st.tuples(
                st.just(["train"]),
                st.sampled_from(["nice", "maf", "realnvp"]).map(lambda a: [a]),
                st.sampled_from(["moons", "x.npy", "x.csv"]).map(lambda d: ["--data", d]),
                st.just(["--out", "model", "--overwrite", "--steps", "2", "--num-points", "64"]),
            ),
            st.tuples(
                st.just(["plot"]),
                name.map(lambda n: [n]),
                st.sampled_from(["p.png", "p.jpg", "p.gif", "mine", "exists.csv"]).map(
                    lambda o: ["-o", o]
                ),
                optional("--overwrite"),
            ),
            st.tuples(
                st.just(["export"]),
                st.sampled_from(["./saved", "mine", "saved/model.keras", "maf-moon"]).map(
                    lambda s: [s]
                ),
                st.sampled_from([["onnx"], ["tflite"], ["pdf"]]).map(lambda f: ["--formats", *f]),
                st.sampled_from(["e", "mine", "saved", "."]).map(lambda o: ["--out", o]),
                optional("--overwrite"),
            ),
        ]
    return st.one_of(commands).map(lambda parts: [a for part in parts for a in part])


def run_in(root: Path, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def check_command(root: Path, argv: list[str]) -> None:
    before = fingerprint(root)
    code, out, err = run_in(root, argv)
    event(f"{argv[0] if argv else '(none)'}: exit {code}")  # --hypothesis-show-statistics
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        notes = [line for line in err.splitlines() if not line.startswith("nfzoo: warning:")]
        assert all(line.startswith("mean log-density") for line in notes), (argv, err)
        check_result(root, argv, out)
    else:
        assert code in (1, 2), (argv, code, err)
        assert err.count("\n") == 1 and re.match(r"^nfzoo( \w+)?: error: ", err), (argv, err)
    after = fingerprint(root)
    replaced = {"exists.csv"} if "--overwrite" in argv else set()
    for path, digest in before.items():  # nothing of the user's deleted or changed
        if path.split("/")[0] not in replaced and not path.startswith(NFZOO_OUTPUTS):
            assert after.get(path) == digest, (argv, path, err)
    leftovers = [p.name for p in root.rglob(".*") if TEMPORARY.match(p.name)]
    assert not leftovers, (argv, leftovers)
    if "--overwrite" not in argv:
        assert (root / "exists.csv").read_text() == "the user's\n", argv


def check_result(root: Path, argv: list[str], out: str) -> None:
    """A command that succeeded wrote what it said it wrote."""
    command = argv[0]
    if command == "sample":
        output = root / argv[argv.index("-o") + 1]
        rows = (
            np.load(output)
            if output.suffix == ".npy"
            else np.loadtxt(output, delimiter=",", ndmin=2)
        )
        assert len(rows) == int(argv[argv.index("-n") + 1]), argv
    elif command == "logprob" and "-o" in argv:
        data = open_table(root / argv[argv.index("--input") + 1])
        output = root / argv[argv.index("-o") + 1]
        scores = (
            np.load(output)
            if output.suffix == ".npy"
            else np.loadtxt(output, delimiter=",", ndmin=2)
        )
        assert np.size(scores) == data.rows and np.isfinite(scores).all(), argv
    elif command == "train":
        assert nfzoo.load(root / argv[argv.index("--out") + 1], source="folder") is not None


@settings(FEW, max_examples=100)
@given(argv=command_lines(slow=False))
def test_command_lines(workspace, argv):
    check_command(workspace, argv)


@pytest.mark.slow
@MANY
@given(argv=command_lines(slow=True))
def test_command_lines_many(workspace, argv):
    check_command(workspace, argv)


# ---- input files --------------------------------------------------------------------------

array = hnp.arrays(
    dtype=st.one_of(
        hnp.floating_dtypes(),
        hnp.integer_dtypes(),
        hnp.complex_number_dtypes(),
        hnp.boolean_dtypes(),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
csv_text = st.lists(
    st.lists(st.sampled_from(["1", "-2.5", "nan", "1e39", "x", "", " 3 ", "4e-3"]), max_size=4),
    max_size=5,
).map(lambda rows: "\n".join(",".join(r) for r in rows))


def check_table(path: Path, columns) -> None:
    try:
        table = open_table(path, columns)
    except TableError as e:
        assert str(e) and "\n" not in str(e)
        return
    x = table.read()
    assert x.dtype == np.float32 and x.shape == (table.rows, table.columns)
    assert table.rows > 0 and np.isfinite(x).all()
    assert columns is None or table.columns == columns


def check_inputs(tmp_path: Path, value, columns) -> None:
    if isinstance(value, np.ndarray):
        np.save(tmp_path / "x.npy", value)
        check_table(tmp_path / "x.npy", columns)
        if value.ndim == 2 and value.size and value.dtype.kind in "iuf":
            expected = value.astype(np.float64)
            if np.isfinite(expected).all() and np.abs(expected).max() < 3e38:
                np.testing.assert_allclose(open_table(tmp_path / "x.npy").read(), expected, 1e-6)
    elif isinstance(value, bytes):
        (tmp_path / "x.npy").write_bytes(value)
        check_table(tmp_path / "x.npy", columns)
    else:
        (tmp_path / "x.csv").write_text(value)
        check_table(tmp_path / "x.csv", columns)


inputs = st.one_of(array, st.binary(max_size=200), csv_text)


@FEW
@given(value=inputs, columns=st.sampled_from([None, 1, 2, 3]))
def test_input_files(tmp_path, value, columns):
    check_inputs(tmp_path, value, columns)


@pytest.mark.slow
@MANY
@given(value=inputs, columns=st.sampled_from([None, 1, 2, 3]))
def test_input_files_many(tmp_path, value, columns):
    check_inputs(tmp_path, value, columns)


# ---- config.json --------------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(), inner)),
    max_leaves=8,
)


def paths_into(config) -> list[list]:
    """Every path (list of keys / indices) into ``config``."""
    found, stack = [], [([], config)]
    while stack:
        path, value = stack.pop()
        found.append(path)
        if isinstance(value, dict | list):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(([*path, k], v) for k, v in items)
    return found


@pytest.fixture(scope="module")
def saved_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg") / "f"
    nfzoo.build("nice", 2, num_layers=2, hidden_units=[8]).save_pretrained(folder)
    return folder, json.loads((folder / "config.json").read_text())


def check_config(folder: Path, config: dict, data) -> None:
    config = json.loads(json.dumps(config))
    paths = [p for p in paths_into(config) if p]
    path = data.draw(st.sampled_from(paths))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_value)
    (folder / "config.json").write_text(json.dumps(config))
    try:
        model = nfzoo.load(folder)
    except ValueError as e:  # IntegrityError included
        assert str(e)
        return
    assert isinstance(model, nfzoo.Flow)


@FEW
@given(data=st.data())
def test_config_files(saved_config, data):
    check_config(*saved_config, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_config_files_many(saved_config, data):
    check_config(*saved_config, data)
