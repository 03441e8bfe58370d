"""Tables of rows (one event a row) in .npy and .csv files, for the command line: read with
every row checked, written streamed, both in chunks so that memory stays constant whatever
the number of rows.

* ``open_table(path, columns)`` checks a file without loading it: a .npy file's header
  (a 2-D array of real numbers, no pickle), then its data through a memory map; a .csv file
  (comma-separated numbers, an optional header line) parsed chunk by chunk. Every value must
  be finite in float32, the precision flows compute in (1e39 is finite in float64, inf in
  float32). ``Table.chunks`` then yields float32 row blocks; ``Table.read`` all of them.
* ``write_table(path, chunks, rows, columns)`` writes the blocks as they come: a .npy header
  for the announced shape (``numpy.lib.format``) followed by the raw rows, or .csv lines,
  into a temporary file renamed into place at the end (``nfzoo.files``), after checking that
  the disk has room for the estimated size.

Every refusal is a ``TableError`` (a ValueError) naming the file and what was expected.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfzoo.files import DestinationError, write_file_atomically

__all__ = ["SUFFIXES", "Table", "TableError", "check_output", "open_table", "write_table"]

SUFFIXES = (".npy", ".csv")
#: values per chunk (4 MiB of float32)
CHUNK_VALUES = 1 << 20
#: bytes a float32 takes in a .csv file as written (%.8g, a separator), for the space check
CSV_BYTES_PER_VALUE = 16
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: .npy format versions nfzoo reads (3.0 only adds UTF-8 field names, which tables lack)
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class TableError(ValueError):
    """A table file that cannot be read or written as asked."""


def chunk_rows(columns: int) -> int:
    """Rows per chunk for rows of ``columns`` values."""
    return max(1, CHUNK_VALUES // max(1, columns))


@dataclass(frozen=True)
class Table:
    """A checked table file: ``rows`` x ``columns`` finite float32 values."""

    path: Path
    rows: int
    columns: int
    _blocks: Callable[[], Iterator[np.ndarray]]

    def chunks(self) -> Iterator[np.ndarray]:
        """The rows in float32 blocks of ``chunk_rows(columns)`` rows."""
        for block in self._blocks():
            yield np.asarray(block, dtype=np.float32).reshape(len(block), self.columns)

    def read(self) -> np.ndarray:
        """All rows, float32 [rows, columns]."""
        return np.concatenate(list(self.chunks()))


def open_table(path: str | os.PathLike, columns: int | None = None) -> Table:
    """Checks the table in ``path`` (see the module docstring) and returns it, unread.
    ``columns``: the number of values a row must have (a 1-D .npy array is then read as one
    column when ``columns`` is 1)."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"input file {path} does not exist")
    if path.is_dir():
        raise TableError(f"input {path} is a folder; expected a .npy or .csv file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"input must be a .npy or .csv file; received {path.name}")
    opener = _open_npy if suffix == ".npy" else _open_csv
    try:
        table = opener(path, columns)
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"could not read {path}: {e}") from None
    if table.rows == 0:
        raise TableError(f"{path} has no rows; expected at least one")
    if columns is not None and table.columns != columns:
        raise TableError(f"{path} has {table.columns} columns; the flow expects {columns}")
    if table.columns == 0:
        raise TableError(f"{path} has rows of no values; expected at least one column")
    _check_finite(table)
    return table


def _open_npy(path: Path, columns: int | None) -> Table:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise TableError(f"{path} is empty (0 bytes); expected a .npy file")
        try:
            version = np.lib.format.read_magic(f)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"format version {version} is not one of {list(_HEADER_READERS)}")
            shape, _, dtype = read_header(f)
        except (ValueError, EOFError, SyntaxError) as e:
            raise TableError(f"{path} is not a valid .npy file ({e})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise TableError(f"{path} must hold plain numbers; received dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TableError(
            f"{path} holds complex numbers (dtype {dtype}); expected real values (store the "
            "real and imaginary parts as columns if both matter)"
        )
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TableError(f"{path} must hold numbers; received dtype {dtype}")
    if len(shape) == 1 and columns == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise TableError(f"{path} must hold a 2-D table (rows x columns); received shape {shape}")
    rows, width = shape
    if rows == 0 or width == 0:
        return Table(path, rows, width, lambda: iter(()))
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise TableError(f"{path} is truncated or not a valid .npy file ({e})") from None
    data = data.reshape(rows, width)
    step = chunk_rows(width)
    return Table(path, rows, width, lambda: (data[i : i + step] for i in range(0, rows, step)))


def _csv_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the lines that hold data: blank lines and a header line (a
    first line that is not all numbers) skipped."""
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if number == 1 and not _is_numeric_line(line):
                continue
            yield number, line


def _is_numeric_line(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def _parse_csv(path: Path, lines: list[tuple[int, str]], width: int) -> np.ndarray:
    """The block's lines as float64 rows of ``width`` values; a bad line is named."""
    try:
        return np.loadtxt([line for _, line in lines], delimiter=",", ndmin=2).reshape(
            len(lines), width
        )
    except ValueError:
        pass  # find the line, for the message
    for number, line in lines:
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise TableError(
                f"{path}, line {number}: expected comma-separated numbers; found "
                f"{line.strip()[:60]!r}"
            ) from None
        if len(values) != width:
            raise TableError(
                f"{path}, line {number}: {len(values)} values where the first row has {width}"
            )
    raise TableError(f"{path}: could not read lines {lines[0][0]}-{lines[-1][0]} as numbers")


def _csv_blocks(path: Path) -> Iterator[np.ndarray]:
    lines = _csv_lines(path)
    first = next(lines, None)
    if first is None:
        return
    width = len(first[1].split(","))
    lines = itertools.chain([first], lines)
    step = chunk_rows(width)
    while block := list(itertools.islice(lines, step)):
        yield _parse_csv(path, block, width)


def _open_csv(path: Path, columns: int | None) -> Table:
    rows, width = 0, None
    for block in _csv_blocks(path):  # a first pass checks every line and counts rows
        rows, width = rows + len(block), block.shape[1]
    return Table(path, rows, width or 0, lambda: _csv_blocks(path))


def _check_finite(table: Table) -> None:
    """Refuses rows with NaN or inf, or with values beyond float32's range, naming them."""
    bad: dict[str, list[int]] = {
        "NaN or inf values": [],
        "values beyond float32's range, |x| > 3.4e38": [],
    }
    start = 0
    for block in table._blocks():
        values = np.asarray(block, dtype=np.float64).reshape(len(block), table.columns)
        finite = np.isfinite(values)
        for what, wrong in zip(bad, (~finite, finite & (np.abs(values) > _FLOAT32_MAX))):
            bad[what].extend((np.flatnonzero(wrong.any(axis=1)) + start + 1).tolist())
        start += len(block)
    for what, rows in bad.items():
        if rows:
            shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
            raise TableError(f"{table.path} has {len(rows)} row(s) with {what} (rows {shown})")


# ---- writing ------------------------------------------------------------------------------


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuses, before any work is done, an output path ``write_table`` would refuse: a
    suffix other than .npy / .csv, a folder, or (without ``overwrite``) an existing file."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise TableError(f"output must end in .npy or .csv; received {path.name}")
    if path.is_dir():
        raise TableError(f"output {path} is a folder; expected a file name")
    if not overwrite and os.path.lexists(path):
        raise TableError(f"{path} exists; pass --overwrite to replace it")
    return path


def _check_space(path: Path, rows: int, columns: int) -> None:
    per_value = 4 if path.suffix.lower() == ".npy" else CSV_BYTES_PER_VALUE
    needed = rows * columns * per_value
    folder = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise TableError(
            f"{path} would take about {needed / 1e9:.1f} GB; {free / 1e9:.1f} GB are free there"
        )


def write_table(
    path: str | os.PathLike,
    chunks: Iterable[np.ndarray],
    rows: int,
    columns: int,
    overwrite: bool = False,
) -> Path:
    """Writes the float32 blocks ``chunks`` (``rows`` rows of ``columns`` values in all) to
    ``path`` (.npy or .csv) as they come, atomically; refuses an existing ``path`` without
    ``overwrite``."""
    path = check_output(path, overwrite)
    _check_space(path, rows, columns)
    npy = path.suffix.lower() == ".npy"

    def write(tmp: Path) -> None:
        written = 0
        with open(tmp, "wb") as f:
            if npy:
                header = {"descr": "<f4", "fortran_order": False, "shape": (rows, columns)}
                np.lib.format.write_array_header_1_0(f, header)
            for block in chunks:
                block = np.asarray(block, dtype="<f4").reshape(-1, columns)
                if npy:
                    f.write(block.tobytes())
                else:
                    np.savetxt(f, block, delimiter=",", fmt="%.8g")
                written += len(block)
        if written != rows:  # the header would lie
            raise RuntimeError(f"wrote {written} rows to {path}; announced {rows}")

    try:
        return write_file_atomically(path, write, overwrite=overwrite)
    except DestinationError as e:
        raise TableError(str(e)) from None
