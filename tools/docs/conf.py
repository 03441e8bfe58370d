"""Sphinx configuration of nfzoo's API documentation (``make docs``: out/docs/index.html).

Built offline: the pages reference MathJax from its CDN, which the browser loads at view time.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

from sphinx.ext import napoleon

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# autodoc imports the library, and with it TensorFlow: keep its native logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nfzoo  # noqa: E402

project = "nfzoo"
release = version = nfzoo.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
# the navigation lists pages and their sections (the layer modules), not every member
toc_object_entries = False
html_theme = "alabaster"

autodoc_default_options = {"member-order": "bysource"}
# the signature shows the parameters; their types would make it unreadable for layers whose
# arguments take several forms, and the docstrings say what each argument accepts
autodoc_typehints = "none"
autodoc_class_signature = "mixed"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" of a dataclass as fields of the class, not as attribute entries that autodoc
# would document a second time from the class body
napoleon_use_ivar = True
# an override without a docstring of its own (get_config, compute_loss) would otherwise show the
# Keras or TFP docstring, written in Markdown and about the parent's contract
autodoc_inherit_docstrings = False


# --- formula blocks -------------------------------------------------------------------------
#
# The docstrings state transforms and log-dets in plain ASCII math, set off as indented blocks
# so that ``help()`` shows them as written:
#
#     the affine law reads
#
#         x_b = z_b * exp(s(z_a)) + t(z_a)
#
# reStructuredText would make such a block a block quote, reflowed as prose. The hook below
# makes it a literal block instead (preformatted, as in help()). A block is converted when it
# follows a blank line after a plain paragraph or a list item and is indented past that
# paragraph's text; one that already belongs to a construct (after ``::``, in a directive or a
# field) or that starts one itself (a list, a directive, a doctest) is left to
# reStructuredText.
#
# The central formula of a flow family is also written in LaTeX, as a ``.. math::`` block right
# after its ASCII block at the same indent. Both are the same formula: help() reads the ASCII
# form, and the pages show the rendered one in its place.

#: first lines that open a reStructuredText construct rather than a plain paragraph
_CONSTRUCT = re.compile(r"(\.\.\s|:[^:\s]|[-*+]\s|#\.\s|\d+[.)]\s|\(\d+\)\s|>>>|\|\s)")
#: a list item: its marker, whose width sets the indent of the item's text
_ITEM = re.compile(r"([-*+]|#\.|\d+[.)]|\(\d+\))\s+")
#: directives whose body is not reStructuredText (converted blocks inside them would show)
_RAW_DIRECTIVES = re.compile(r"\.\.\s+(math|code-block|code|sourcecode|raw)::")
_MATH = re.compile(r"\.\.\s+math::")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _paragraph(first: str, last: str) -> tuple[int, int | None, bool]:
    """What a block indented past a paragraph would be: (the paragraph's indent; the indent of
    its text, past which a block is a formula block, or None where it is not; whether the block
    is opaque, the body of a literal block or of a directive that is not reStructuredText)."""
    indent, text = _indent(first), first.lstrip()
    if last.rstrip().endswith("::") or _RAW_DIRECTIVES.match(text):
        return indent, None, True
    item = _ITEM.match(text)
    if item:
        return indent, indent + item.end(), False
    return indent, (None if _CONSTRUCT.match(text) else indent), False


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """End of the block from ``start``: its lines are indented past ``indent``, blank lines
    within it included, trailing ones not."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def literal_formula_blocks(lines: list[str]) -> list[str]:
    """``lines`` with every indented formula block after a plain paragraph made a literal block,
    and an ASCII block that a ``.. math::`` block restates right after it left out."""
    out: list[str] = []
    i, n = 0, len(lines)
    previous: tuple[int, int | None, bool] | None = None  # ``_paragraph`` of the one before
    while i < n:
        line = lines[i]
        if not line.strip():
            out.append(line)
            i += 1
            continue
        if previous is not None and not lines[i - 1].strip():
            indent, text_indent, opaque = previous
            if opaque and _indent(line) > indent:
                end = _block_end(lines, i, indent)
                out.extend(lines[i:end])
                i, previous = end, None
                continue
            formula = (
                text_indent is not None
                and _indent(line) > text_indent
                and not _CONSTRUCT.match(line.lstrip())
            )
            if formula:
                end = _block_end(lines, i, text_indent)
                after = end
                while after < n and not lines[after].strip():
                    after += 1
                if (
                    after < n
                    and _indent(lines[after]) == text_indent
                    and _MATH.match(lines[after].lstrip())
                ):
                    i, previous = after, None
                    continue
                # an expanded-form "::" paragraph: it introduces the block and shows nothing
                out[-1:-1] = ["", " " * text_indent + "::"]
                out.extend(lines[i:end])
                i, previous = end, None
                continue
        start = i
        while i < n and lines[i].strip():
            i += 1
        out.extend(lines[start:i])
        previous = _paragraph(lines[start], lines[i - 1])
    return out


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    # Attribute, constant and property docs are prose: napoleon would read a first line
    # "what it is: details" as Google's "type: description" and show the prose as a type.
    if what not in ("attribute", "data", "property"):
        napoleon._process_docstring(app, what, name, obj, options, lines)
    lines[:] = literal_formula_blocks(lines)


def _constructor_signature(app, what, name, obj, options, signature, return_annotation):
    """The parameters of ``__init__`` for classes that autodoc would show as ``(*args,
    **kwargs)``: Keras layers and models define ``__new__(cls, *args, **kwargs)``, which autodoc
    prefers to the constructor."""
    if what != "class" or signature != "(*args, **kwargs)":
        return None
    init = inspect.signature(obj.__init__)
    parameters = [
        p.replace(annotation=inspect.Parameter.empty)
        for p in list(init.parameters.values())[1:]  # self
    ]
    return str(init.replace(parameters=parameters)), return_annotation


def setup(app):
    # napoleon runs inside ``_process_docstring``, before the formula blocks are read
    listeners = app.events.listeners["autodoc-process-docstring"]
    found = [ls for ls in listeners if ls.handler is napoleon._process_docstring]
    if len(found) != 1:
        raise RuntimeError("sphinx.ext.napoleon's docstring listener was not found")
    app.disconnect(found[0].id)
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _constructor_signature)
