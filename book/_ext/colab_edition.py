"""Sphinx extension: in a translated edition, the Colab button opens that edition's notebook.

sphinx-book-theme's launch button opens ``chapters/NN_slug.ipynb`` on GitHub in Colab. The Chinese edition
(``-D language=zh_CN``, `make book-zh`) has its own Colab notebooks, ``chapters/zh_CN/NN_slug.ipynb``, generated
by scripts/sync_notebooks.py with the same code cells and translated markdown; this points the button there.
A page whose translated notebook is missing gets a warning, which fails the strict build.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)


def _buttons(buttons):
    for button in buttons:
        yield button
        yield from _buttons(button.get("buttons", []))


def point_colab_to_edition(app, pagename, templatename, context, doctree):
    language = app.config.language or "en"
    if language == "en" or doctree is None:
        return
    for button in _buttons(context.get("header_buttons", [])):
        url = button.get("url", "")
        if button.get("text") != "Colab" or not url.endswith(".ipynb"):
            continue
        head, name = url.rsplit("/", 1)
        translated = Path(app.srcdir) / Path(pagename).parent / language / name
        if not translated.exists():
            LOGGER.warning(f"{pagename}: no {language} Colab notebook {translated.relative_to(app.srcdir)} "
                           "(run `make notebooks`)", type="colab_edition")
            continue
        button["url"] = f"{head}/{language}/{name}"


def setup(app):
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", point_colab_to_edition, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
