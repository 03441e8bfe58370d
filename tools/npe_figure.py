"""Writes tools/figures/npe-two-moons.png, the README's NPE figure, by running the README's own NPE
example (the Python block that writes ``npe-two-moons.png``) in a temporary folder, so that
the figure is always what that block draws.

    .venv/bin/python tools/npe_figure.py
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nfzoo.files import write_file_atomically

ROOT = Path(__file__).resolve().parents[1]
FIGURE = "npe-two-moons.png"


def readme_block(name: str = FIGURE) -> str:
    """The README's Python block that writes ``name``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if f'"{name}"' in b]
    if len(found) != 1:
        raise ValueError(f"README.md has {len(found)} Python blocks that write {name}; expected 1.")
    return found[0]


def main() -> int:
    code = compile(readme_block(), f"README.md block writing {FIGURE}", "exec")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            exec(code, {"__name__": "__readme__"})
        finally:
            os.chdir(cwd)
        out = ROOT / "tools" / "figures" / FIGURE
        out.parent.mkdir(exist_ok=True)
        write_file_atomically(out, lambda t: shutil.copyfile(Path(tmp) / FIGURE, t))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
