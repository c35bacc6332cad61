"""Translate a chapter's MyST markdown with its gettext catalogue, for the Chinese Colab notebooks.

The Chinese edition of the book is built by Sphinx from the English sources and the catalogues
``locales/<language>/LC_MESSAGES/<page>.po``. Sphinx looks up each paragraph, heading, list item, table cell,
caption and directive title by its source text (a *msgid*, the source with its line breaks made spaces). This
module does the same lookup on the MyST source of a markdown cell, so that the Chinese ``.ipynb`` says exactly
what the Chinese book says; :mod:`myst_markdown` then renders the translated MyST into plain Markdown.

The source is parsed with myst-parser's own markdown-it parser (the one the book uses), so a block is found
the way Sphinx finds it: each ``inline`` token is one translatable unit, its ``map`` the lines it spans.
Directive bodies (admonitions, figures) are parsed again, as MyST parses them.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ROOT / "locales"
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:+-]+)\}\s*(?P<arg>.*)$")
OPTION = re.compile(r"^:[\w-]+:")
#: Directives whose body is code or math, not prose; and those whose argument is a path or a name, not a title.
VERBATIM = {"math", "code-block", "code", "include", "literalinclude"}
NO_TITLE = VERBATIM | {"figure", "image", "glue:figure", "glue", "glue:any", "bibliography"}


@cache
def catalogue(docname: str, language: str) -> dict[str, str]:
    """``{msgid: msgstr}`` of the page ``docname`` (``chapters/02_x``): translated, non-fuzzy entries only
    (none for a page whose catalogue `make gettext` has not made yet)."""
    from babel.messages.pofile import read_po

    path = LOCALES / language / "LC_MESSAGES" / f"{docname}.po"
    if not path.exists():
        return {}
    with path.open("rb") as f:
        po = read_po(f)
    return {m.id: m.string for m in po if m.id and m.string and not m.fuzzy and isinstance(m.id, str)}


@lru_cache(maxsize=1)
def _parser():
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    config = MdParserConfig(enable_extensions={"amsmath", "dollarmath", "colon_fence", "deflist", "substitution"})
    return create_md_parser(config, RendererHTML)


def msgid(text: str) -> str:
    """The catalogue key of a block's source text, as Sphinx makes it."""
    return text.replace("\n", " ").strip()


class Translation:
    """The translation of one page's markdown: which msgids it used, and which blocks it could not translate."""

    def __init__(self, docname: str, language: str):
        self.docname, self.language = docname, language
        self.messages = catalogue(docname, language)
        self.used: set[str] = set()
        self.missing: list[str] = []

    def lookup(self, text: str) -> str | None:
        key = msgid(text)
        if not key or not re.search(r"[A-Za-z]", key):  # numbers, symbols, math only: nothing to translate
            return None
        if key in self.messages:
            self.used.add(key)
            return self.messages[key]
        self.missing.append(key)
        return None

    def markdown(self, text: str) -> str:
        """``text`` (MyST markdown) with every block the catalogue knows replaced by its translation."""
        lines = text.split("\n")
        return "\n".join(self._lines(lines))

    def _lines(self, lines: list[str]) -> list[str]:
        tokens = _parser().parse("\n".join(lines))
        out: list[str | None] = list(lines)
        for token in tokens:
            if token.map is None:
                continue
            start, end = token.map
            if token.type == "inline":
                self._inline(out, lines, token.content, start, end)
            elif token.type in ("fence", "colon_fence") and DIRECTIVE.match(token.info.strip()):
                self._directive(out, lines, token, start, end)
        return [line for line in out if line is not None]

    def _inline(self, out, lines, content, start, end):
        translated = self.lookup(content)
        if translated is None:
            return
        # The translation replaces the block's text on its first line (after a "- ", "# " or "| " prefix, and
        # after any table cell translated before it on that line); the block's other lines go.
        first = content.split("\n", 1)[0]
        line = out[start]
        at = line.find(first)
        if at < 0:
            raise ValueError(f"{self.docname}: cannot place the translation of {first!r} in {line!r}")
        rest = line[at + len(first):] if "\n" not in content else ""  # a table row's other cells
        out[start] = line[:at] + translated.replace("\n", " ") + rest
        for i in range(start + 1, end):
            out[i] = None

    def _directive(self, out, lines, token, start, end):
        m = DIRECTIVE.match(token.info.strip())
        opening = lines[start]
        arg = m.group("arg").strip()
        if arg and m.group("name") not in NO_TITLE:
            translated = self.lookup(arg)
            if translated is not None:
                at = opening.rfind(arg)
                out[start] = opening[:at] + translated + opening[at + len(arg):]
        if m.group("name") in VERBATIM:
            return
        # the body: the lines between the fences, options (":class: dropdown") first
        body_start, body_end = start + 1, end - 1
        while body_start < body_end and OPTION.match(lines[body_start].strip()):
            body_start += 1
        indent = len(lines[start]) - len(lines[start].lstrip())
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[body_start:body_end]]
        translated = self._lines(body)
        out[body_start:body_end] = [" " * indent + line if line else line for line in translated] + \
            [None] * (len(body) - len(translated))


def translate_markdown(text: str, docname: str, language: str) -> tuple[str, Translation]:
    """``text`` translated into ``language`` from the catalogue of ``docname``, and the :class:`Translation`."""
    translation = Translation(docname, language)
    return translation.markdown(text), translation
