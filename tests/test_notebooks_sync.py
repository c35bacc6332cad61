"""The Colab notebooks (chapters/*.ipynb) are generated from the chapter sources (chapters/*.md) and in sync."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


def _load_sync():
    spec = importlib.util.spec_from_file_location("sync_notebooks", ROOT / "scripts" / "sync_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_notebooks = _load_sync()
from myst_markdown import raw_myst, render_markdown  # noqa: E402  (scripts/ is on the path now)


def _cells(notebook, page: str) -> list[tuple[str, str]]:
    """(type, text) of each cell as the Colab notebook has it: code as written, markdown rendered."""
    return [(cell.cell_type, cell.source if cell.cell_type == "code" else render_markdown(cell.source, page))
            for cell in notebook.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_slug.md found"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.name)
def test_notebook_matches_its_source(source: Path):
    target = source.with_suffix(".ipynb")
    assert target.exists(), f"{target.name} is missing: run `make notebooks`"
    notebook = json.loads(target.read_text(encoding="utf-8"))
    expected = jupytext.read(source, fmt="md:myst")
    actual = [(cell["cell_type"], "".join(cell["source"])) for cell in notebook["cells"]]
    assert actual == _cells(expected, f"chapters/{source.stem}"), f"{target.name} is out of sync with {source.name}: run `make notebooks`"
    stale = sync_notebooks.sync(source, check_only=True)
    assert not stale, f"{[p.name for p in stale]} not as generated: run `make notebooks`"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_ready_for_colab(source: Path):
    notebook = json.loads(source.with_suffix(".ipynb").read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), "outputs committed"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids), "cell ids are not unique"
    first = "".join(code[0]["source"])
    assert '"google.colab" in sys.modules' in first and "pip install" in first, "first code cell: the Colab install"
    assert "remove-cell" in code[0]["metadata"].get("tags", []), "the Colab install cell is hidden in the book"
    assert "chapter_setup(" in "".join(code[1]["source"]), "second code cell: chapter_setup(...)"
    assert "ch.report()" in "".join(code[-1]["source"]), "last code cell: ch.report()"
    header = jupytext.read(source, fmt="md:myst").metadata["jupytext"]["text_representation"]
    assert header["format_name"] == "myst", "front matter needs jupytext.text_representation.format_name: myst"


def test_sync_detects_an_edit_and_keeps_cell_ids(tmp_path: Path):
    source = tmp_path / "01_demo.md"
    header = (
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "    format_version: 0.13\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
    )
    source.write_text(header + "# Demo\n\n```{code-cell} ipython3\nx = 1\n```\n\n```{code-cell} ipython3\nx\n```\n")
    zh = tmp_path / "zh_CN" / "01_demo.ipynb"
    assert sync_notebooks.sync(source) == [source.with_suffix(".ipynb"), zh]  # written, English and Chinese
    assert not sync_notebooks.sync(source, check_only=True)  # now in sync
    first_text = source.with_suffix(".ipynb").read_text()
    first = json.loads(first_text)
    # Regenerated from scratch, the notebook is the same file: new cells get content-derived ids.
    source.with_suffix(".ipynb").unlink()
    sync_notebooks.sync(source)
    assert source.with_suffix(".ipynb").read_text() == first_text
    source.write_text(source.read_text().replace("x = 1", "x = 2"))
    assert sync_notebooks.sync(source, check_only=True) == [source.with_suffix(".ipynb"), zh]  # edit detected
    sync_notebooks.sync(source)
    second = json.loads(source.with_suffix(".ipynb").read_text())
    assert [c["id"] for c in first["cells"]] == [c["id"] for c in second["cells"]]  # ids are stable
    assert "".join(second["cells"][1]["source"]) == "x = 2"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.name)
def test_colab_markdown_shows_no_raw_myst(source: Path):
    """Colab renders plain Markdown only: no role, directive fence or label may be left in a markdown cell."""
    notebook = json.loads(source.with_suffix(".ipynb").read_text(encoding="utf-8"))
    markdown = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
    assert markdown
    left = {text[:60]: raw_myst(text) for text in markdown if raw_myst(text)}
    assert not left, f"{source.name}: raw MyST in the Colab notebook: {left}"
    # and the source had some MyST to render: citations become links to the bibliography
    if "{cite}" in source.read_text(encoding="utf-8"):
        assert any("book/bibliography.html)" in text for text in markdown)


def test_readme_colab_links_open_existing_notebooks_in_both_languages():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/([^)\s]+\.ipynb)", readme)
    assert {Path(p).name for p in links if "/zh_CN/" not in p} == {s.with_suffix(".ipynb").name for s in CHAPTERS}
    assert {Path(p).name for p in links if "/zh_CN/" in p} == {s.with_suffix(".ipynb").name for s in CHAPTERS}
    missing = [p for p in links if not (ROOT / p).exists()]
    assert not missing, f"README links to notebooks that do not exist: {missing}"
