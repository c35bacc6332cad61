"""Code a reader sees fits the book's column: ``check`` output and every ``show_source`` object.

The book's content column holds about 88 characters of code (``book.COLUMN``); longer lines are cut
off on the page. Raw Sphinx roles in a displayed docstring show up as markup. So:

* ``check`` wraps what it prints at ``COLUMN`` characters;
* every object a chapter displays with ``show_source(X)`` has source lines of at most ``COLUMN``
  characters and no Sphinx roles. ``X`` is resolved as the chapter resolves it: the chapter's own
  import statements are executed, then ``X`` is evaluated in their namespace.

Objects that do not fit yet, in files other helpers own, are listed in ``KNOWN_TOO_WIDE`` as strict
xfails: each one turns into a failure (XPASS) as soon as it is fixed, and its entry must then go.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from resnet_tutorial import book

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
SPHINX_ROLE = re.compile(r":(func|class|math|mod|meth|attr|data):`")
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)

#: Names a chapter binds at run time rather than by an import, and what they stand for.
RUNTIME_NAMES = {"data": "resnet_tutorial.data.ImageData"}

#: "chapter::expression" -> owner of the file: objects shown by a chapter that do not fit yet.
KNOWN_TOO_WIDE: dict[str, str] = {}


def _code_cells(text: str) -> list[ast.Module]:
    cells = []
    for body in CELL.findall(text):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith(("!", "%", ":"))]
        try:
            cells.append(ast.parse("\n".join(lines)))
        except SyntaxError:
            continue
    return cells


def _shown_objects() -> list[tuple[str, str, dict]]:
    """(chapter, expression, the chapter's import namespace) for every show_source call."""
    found = []
    for path in sorted(CHAPTERS.glob("*.md")):
        cells = _code_cells(path.read_text())
        imports = [n for tree in cells for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        calls = [
            ast.unparse(n.args[0])
            for tree in cells
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "show_source" and n.args
        ]
        for expression in dict.fromkeys(calls):
            found.append((path.stem, expression, imports))
    return found


def _resolve(expression: str, imports: list) -> object:
    import importlib

    namespace: dict = {}
    for node in imports:
        exec(compile(ast.Module(body=[node], type_ignores=[]), "<chapter>", "exec"), namespace)
    for name, target in RUNTIME_NAMES.items():
        if name not in namespace:
            module, attr = target.rsplit(".", 1)
            namespace[name] = getattr(importlib.import_module(module), attr)
    return eval(expression, namespace)


SHOWN = _shown_objects()


def _params():
    for chapter, expression, imports in SHOWN:
        key = f"{chapter}::{expression}"
        marks = []
        if key in KNOWN_TOO_WIDE:
            marks = [pytest.mark.xfail(strict=True, reason=f"not fixed yet; owner: {KNOWN_TOO_WIDE[key]}")]
        yield pytest.param(expression, imports, id=key, marks=marks)


def test_chapters_show_source():
    assert len(SHOWN) >= 10, "the chapters stopped calling show_source: is the parser still right?"
    keys = {f"{c}::{e}" for c, e, _ in SHOWN}
    stale = sorted(set(KNOWN_TOO_WIDE) - keys)
    assert not stale, f"KNOWN_TOO_WIDE lists objects no chapter shows any more: {stale}"


@pytest.mark.parametrize(("expression", "imports"), list(_params()))
def test_shown_source_fits_the_column(expression, imports):
    source = book.source_of(_resolve(expression, imports))
    too_wide = [f"{len(line)}: {line}" for line in source.splitlines() if len(line) > book.COLUMN]
    roles = [line.strip() for line in source.splitlines() if SPHINX_ROLE.search(line)]
    assert not too_wide, f"{len(too_wide)} lines over {book.COLUMN} characters:\n" + "\n".join(too_wide)
    assert not roles, "Sphinx roles in the displayed source:\n" + "\n".join(roles)


def test_check_wraps_at_the_column(capsys):
    claim = "a claim long enough to need wrapping " * 5
    book.check(claim.strip(), True, detail="with a detail that is also printed")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= book.COLUMN for line in lines)
    assert lines[0].startswith("\u2714 a claim") and all(line.startswith("  ") for line in lines[1:])
    words = " ".join(line.strip() for line in lines).split()
    assert words == ["\u2714", *claim.split(), "(with", "a", "detail", "that", "is", "also", "printed)"]


def test_check_keeps_a_short_claim_on_one_line(capsys):
    book.check("two is more than one", 2 > 1, detail="2 > 1")
    assert capsys.readouterr().out == "\u2714 two is more than one (2 > 1)\n"


def test_chapter_code_fits_the_column():
    """Every line of every chapter's code cells, shown or collapsed, fits the book's column (at most
    book.COLUMN characters; book/_static/code-column.css makes that many fit at 1280 px)."""
    import jupytext

    wide = []
    for md in sorted(CHAPTERS.glob("[0-9][0-9]_*.md")):
        for cell in jupytext.read(md, fmt="md:myst").cells:
            if cell.cell_type == "code":
                wide += [f"{md.name}: {line}" for line in cell.source.split("\n") if len(line) > book.COLUMN]
    assert not wide, f"code lines over {book.COLUMN} characters: {wide}"
