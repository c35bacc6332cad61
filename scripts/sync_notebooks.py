"""Generate the Colab notebooks: ``chapters/NN_slug.ipynb`` from each ``chapters/NN_slug.md``.

The ``.md`` file (a jupytext MyST notebook) is the source the book builds and the authors edit; the ``.ipynb``
beside it is what the book's Colab button opens, and ``chapters/zh_CN/NN_slug.ipynb`` what the Chinese edition's
button opens: the same cells (the same ids, the same code), its markdown translated from the gettext catalogue
``locales/zh_CN/LC_MESSAGES/chapters/NN_slug.po`` by ``scripts/translate_myst.py``, as the Chinese book is. It has no outputs, and its cell ids stay stable across
regenerations: a cell whose type and text are unchanged keeps its id (as ``jupytext --update`` does), and a new
cell gets an id derived from its content, so regenerating from scratch gives the same file. Its markdown is
plain Markdown: MyST's roles and directives (citations, glued values, cross-references, admonitions) are
rendered by ``scripts/myst_markdown.py``, because Jupyter and Colab would show them as raw text.

    python scripts/sync_notebooks.py            # write every chapters/*.ipynb (and zh_CN/) that is out of date
    python scripts/sync_notebooks.py --check    # exit 1 and list the notebooks that are out of date
    python scripts/sync_notebooks.py chapters/01_background.md   # only these chapters
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from myst_markdown import raw_myst, render_markdown  # noqa: E402
from translate_myst import translate_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
#: The translated editions whose Colab notebooks are generated too, each in chapters/<language>/.
LANGUAGES = ("zh_CN",)
#: Lines a translated notebook adds to its Colab install cell (inside its ``if "google.colab" ...:``), so that
#: its figures are labelled in its language (resnet_tutorial.plots.label), with a font that has the glyphs.
#: Colab has no CJK font: Debian's is installed first, and without it the figures stay English.
INSTALL_EXTRA = {"zh_CN": [
    "    # 中文版：图表标签用中文，先安装 CJK 字体（Colab 没有预装；安装失败时图表标签保持英文）",
    "    import os, subprocess",
    '    fonts = "apt-get -qq install -y fonts-noto-cjk"',
    '    if subprocess.run(f"{fonts} || (apt-get -qq update && {fonts})", shell=True,',
    "                      capture_output=True).returncode == 0:",
    '        os.environ["RESNET_TUTORIAL_LANGUAGE"] = "zh_CN"',
]}


def chapter_sources(paths: list[str] | None = None) -> list[Path]:
    """The chapter sources to sync: the given ``.md`` files, or every ``chapters/*.md``."""
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(CHAPTERS.glob("*.md"))


def _content_id(cell: nbformat.NotebookNode, taken: set[str]) -> str:
    """A cell id derived from the cell's type and text (and made unique within the notebook)."""
    digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()
    for start in range(0, len(digest) - 8):
        candidate = digest[start : start + 8]
        if candidate not in taken:
            return candidate
    raise RuntimeError("could not find a unique cell id")  # pragma: no cover - 32 tries of sha1 bytes


def docname(source: Path) -> str:
    """The page name of ``source`` in the book: ``chapters/02_residual_connections``."""
    source = Path(source).resolve()
    if source.is_relative_to(ROOT):
        return source.relative_to(ROOT).with_suffix("").as_posix()
    return f"chapters/{source.stem}"


def expected_notebook(source: Path, previous: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """The Colab notebook for ``source``: its cells without outputs, in plain Markdown, ids kept from ``previous``."""
    notebook = jupytext.read(source, fmt="md:myst")
    page = docname(source)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = render_markdown(cell.source, page)
            leftover = raw_myst(cell.source)
            if leftover:
                raise ValueError(f"{source.name}: MyST syntax left in a Colab markdown cell: {leftover}")
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    if previous is not None and previous.nbformat == 4:
        previous = nbformat.NotebookNode(previous)
        previous.nbformat_minor = 5
        notebook = combine_inputs_with_outputs(notebook, previous, fmt="md:myst")
        known = {cell.get("id") for cell in previous.cells}
    else:
        known = set()
    taken: set[str] = set()
    for cell in notebook.cells:
        if cell.get("id") not in known or cell.get("id") in taken:
            cell["id"] = _content_id(cell, taken)
        taken.add(cell["id"])
        cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    notebook.metadata = nbformat.NotebookNode(
        kernelspec=dict(KERNELSPEC),
        language_info={"name": "python"},
        colab={"provenance": []},
    )
    nbformat.validate(notebook)
    return notebook


def translated_notebook(source: Path, notebook: nbformat.NotebookNode, language: str):
    """The Colab notebook of the ``language`` edition: ``notebook`` (the English one of ``source``) with its
    markdown cells translated and :data:`INSTALL_EXTRA` in its install cell; the other code cells and all ids
    unchanged. Returns it and the blocks left untranslated."""
    page = docname(source)
    english = jupytext.read(source, fmt="md:myst")
    translated = nbformat.from_dict(notebook)
    missing: list[str] = []
    install = next(cell for cell in translated.cells if cell.cell_type == "code")
    install.source = install.source.rstrip("\n") + "\n" + "\n".join(INSTALL_EXTRA.get(language, []))
    for cell, original in zip(translated.cells, english.cells, strict=True):
        if cell.cell_type == "markdown":
            text, translation = translate_markdown(original.source, page, language)
            missing += translation.missing
            cell.source = render_markdown(text, page, language=language)
            leftover = raw_myst(cell.source)
            if leftover:
                raise ValueError(f"{source.name} ({language}): MyST syntax left in a Colab markdown cell: {leftover}")
    nbformat.validate(translated)
    return translated, missing


def translated_path(source: Path, language: str) -> Path:
    return source.parent / language / source.with_suffix(".ipynb").name


def notebook_text(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook, version=4) + "\n"


def _write(target: Path, expected: str, check_only: bool) -> bool:
    current = target.read_text(encoding="utf-8") if target.exists() else None
    if current == expected:
        return True
    if not check_only:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".ipynb.tmp")
        tmp.write_text(expected, encoding="utf-8")
        tmp.replace(target)
    return False


def sync(source: Path, check_only: bool = False) -> list[Path]:
    """Write (or, with ``check_only``, compare) the ``.ipynb`` beside ``source`` and its translations; the
    notebooks that were out of date. A block without translation keeps its English text, with a warning (the
    catalogue tests of tests/test_zh.py fail until it is translated)."""
    target = source.with_suffix(".ipynb")
    current = target.read_text(encoding="utf-8") if target.exists() else None
    previous = nbformat.reads(current, as_version=4) if current else None
    notebook = expected_notebook(source, previous)
    stale = [] if _write(target, notebook_text(notebook), check_only) else [target]
    for language in LANGUAGES:
        translated, missing = translated_notebook(source, notebook, language)
        if missing:
            print(f"warning: {source.name}: {len(missing)} block(s) without a {language} translation, left in "
                  f"English (run `make gettext` and translate them): {missing[0][:60]!r}...", file=sys.stderr)
        path = translated_path(source, language)
        if not _write(path, notebook_text(translated), check_only):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", help="chapter .md files (default: chapters/*.md)")
    parser.add_argument("--check", action="store_true", help="only report the notebooks that are out of date")
    args = parser.parse_args(argv)
    stale = [path for src in chapter_sources(args.sources) for path in sync(src, check_only=args.check)]
    for path in stale:
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{'out of date' if args.check else 'wrote'}: {rel}")
    if args.check and stale:
        print("run `make notebooks` (python scripts/sync_notebooks.py) and commit the notebooks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
