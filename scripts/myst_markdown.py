"""Render the MyST-only syntax of a chapter's markdown into plain Markdown, for the Colab notebooks.

Jupyter and Colab show MyST roles and directives as raw text. The book builds from the MyST source; the
generated ``.ipynb`` gets plain Markdown instead:

- ``{cite}`he2016deep``` becomes "[He et al. (2016a)](.../book/bibliography.html)", the authors and year read
  from ``book/references.bib`` (a letter tells apart one author's works of one year); after prose that already
  names the authors ("He et al. {cite}`...`") only the year is added;
- ``{glue:text}`name:.1f``` becomes ``name`` in code type, with one line at the end of the cell saying the
  values are printed by the cells above (``book.glue`` prints ``name = value`` outside the book);
- ``{doc}``, ``{ref}``, ``{numref}`` and ``{eq}`` become links into the published book (:data:`BOOK_URL`);
- admonitions (``{admonition}``, ``{note}``, ``{tip}``, ...) become blockquotes with a bold title, a
  ``{figure}`` an image with its caption, ``{math}`` a ``$$`` block; labels ``(name)=`` and ``%`` comments go;
- any other role keeps its text, any other directive its body.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The published book (GitHub Pages of https://github.com/resnet-tutorial/resnet-tutorial). The one place
#: that names it: the Colab notebooks link here for citations and cross-references.
BOOK_URL = "https://resnet-tutorial.github.io/resnet-tutorial/"
BIBLIOGRAPHY = "book/bibliography"
REFERENCES_BIB = ROOT / "book" / "references.bib"
#: Raw files of the repository, for figures a chapter shows from a file.
RAW_URL = "https://raw.githubusercontent.com/resnet-tutorial/resnet-tutorial/main/"

ROLE = re.compile(r"\{(?P<name>[A-Za-z][\w:+-]*)\}`(?P<content>[^`]+)`")
FENCE_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:+-]+)\}\s*(?P<arg>.*)$")
CODE_FENCE = re.compile(r"^ *(`{3,}|~{3,})")
LABEL = re.compile(r"^\((?P<label>[\w.:-]+)\)=\s*$")
ADMONITIONS = {"admonition", "note", "tip", "hint", "important", "warning", "caution", "attention", "danger",
               "error", "seealso", "todo", "exercise", "solution", "dropdown"}
#: Where each translated edition is published, below BOOK_URL.
EDITIONS = {"zh_CN": "zh/"}
#: The words the rendering adds (admonition titles without an argument, notes on glued values).
PHRASES = {"zh_CN": {
    "Note": "注意", "Tip": "提示", "Hint": "提示", "Important": "重要", "Warning": "警告", "Caution": "小心",
    "Attention": "注意", "Danger": "危险", "Error": "错误", "See also": "另请参阅", "Todo": "待办",
    "Exercise": "练习", "Solution": "解答", "Dropdown": "展开",
    "The bibliography is in the [book]({url}).": "参考文献见[本书]({url})。",
    "(`{name}`: shown by the cells above)": "（`{name}`：由上面的单元格显示）",
    "{names}: printed by the cells above, where the book shows the numbers in the text.":
        "{names}：由上面的单元格打印；在书中，这些数值直接显示在正文里。",
}}
_LATEX_ACCENTS = {"'": "\u0301", '"': "\u0308", "`": "\u0300", "^": "\u0302", "~": "\u0303", "c": "\u0327"}


def page_url(docname: str, anchor: str = "", language: str = "en") -> str:
    """The published page of ``docname`` (``chapters/02_residual_connections``), with an optional anchor, in
    the edition of ``language`` (the Chinese one is published under ``zh/``, as book/_static/language-switch.js
    expects)."""
    edition = "" if language == "en" else EDITIONS[language]
    return f"{BOOK_URL}{edition}{docname}.html" + (f"#{anchor}" if anchor else "")


def phrase(text: str, language: str = "en") -> str:
    """One of the few phrases the rendering itself writes, in ``language``."""
    return text if language == "en" else PHRASES[language].get(text, text)


# --- bibliography -----------------------------------------------------------------------------------


def _latex_to_text(text: str) -> str:
    import unicodedata

    def accent(m: re.Match) -> str:
        return unicodedata.normalize("NFC", m.group(2) + _LATEX_ACCENTS[m.group(1)])

    text = re.sub(r"\{?\\([\'\"`^~c])\{?([A-Za-z])\}?\}?", accent, text)
    return text.replace("{", "").replace("}", "").replace("~", " ").strip()


def _bib_fields(body: str) -> dict[str, str]:
    """``name = {value}`` fields of one BibTeX entry (values with nested braces)."""
    fields, i = {}, 0
    for m in re.finditer(r"(\w+)\s*=\s*", body):
        if m.start() < i:
            continue
        name, j = m.group(1).lower(), m.end()
        if j < len(body) and body[j] == "{":
            depth, k = 0, j
            while k < len(body):
                depth += {"{": 1, "}": -1}.get(body[k], 0)
                if depth == 0:
                    break
                k += 1
            fields[name], i = body[j + 1 : k], k + 1
        else:
            value = re.match(r'"?([^",\n]*)', body[j:]).group(1)
            fields[name], i = value, j + len(value)
    return fields


def _surname(author: str) -> str:
    author = author.strip()
    if author.startswith("{") and author.endswith("}"):  # {{A corporate author}}
        return _latex_to_text(author)
    if "," in author:
        return _latex_to_text(author.split(",")[0])
    return _latex_to_text(author.split()[-1])


def _author_label(authors: str) -> str:
    authors = authors.strip()
    if authors.startswith("{") and authors.endswith("}"):  # {{A corporate author}}: one name
        return _latex_to_text(authors)
    names = [_surname(a) for a in re.split(r"\s+and\s+", authors.strip()) if a.strip()]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


@lru_cache(maxsize=4)
def read_bibliography(path: Path = REFERENCES_BIB) -> dict[str, tuple[str, str]]:
    """``{key: (authors, year)}`` for every entry of ``path``, e.g. ``("He et al.", "2016a")``."""
    text = Path(path).read_text(encoding="utf-8")
    entries = []
    for m in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        start, nxt = m.end(), text.find("\n@", m.end())
        fields = _bib_fields(text[start : nxt if nxt != -1 else len(text)])
        authors = _author_label(fields.get("author") or fields.get("editor") or m.group(2))
        entries.append((m.group(2), authors, fields.get("year", "n.d.").strip()))
    seen: dict[tuple[str, str], list[str]] = {}
    for key, authors, year in entries:
        seen.setdefault((authors, year), []).append(key)
    result = {}
    for key, authors, year in entries:
        same = seen[(authors, year)]
        suffix = "abcdefghijklmnopqrstuvwxyz"[same.index(key)] if len(same) > 1 else ""
        result[key] = (authors, year + suffix)
    return result


def render_citation(keys: str, before: str, bib: dict[str, tuple[str, str]], language: str = "en") -> str:
    url = page_url(BIBLIOGRAPHY, language=language)
    parts = []
    for key in [k.strip() for k in keys.split(",") if k.strip()]:
        if key not in bib:
            raise KeyError(f"{{cite}}`{key}` is not in book/references.bib")
        authors, year = bib[key]
        named = (authors, authors.replace(" et al.", " 等人"), authors.replace(" et al.", "等人"))
        if len(keys.split(",")) == 1 and before.rstrip().endswith(named):
            return f"([{year}]({url}))"  # "He et al. {cite}`he2016deep`": the authors are in the prose already
        parts.append(f"[{authors} ({year})]({url})")
    return "; ".join(parts)


# --- cross-references -------------------------------------------------------------------------------


def _split_target(content: str) -> tuple[str | None, str]:
    m = re.match(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", content.strip(), re.S)
    return (m.group("text"), m.group("target")) if m else (None, content.strip())


@lru_cache(maxsize=1)
def _documents() -> dict[str, str]:
    """``{docname: title}`` of every page of the book (chapters and book/)."""
    docs = {}
    for path in sorted([*ROOT.glob("chapters/*.md"), *ROOT.glob("book/*.md")]):
        title = next((line[2:].strip() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("# ")), path.stem)
        docs[path.relative_to(ROOT).with_suffix("").as_posix()] = title
    return docs


@lru_cache(maxsize=1)
def _labels() -> dict[str, tuple[str, str]]:
    """``{label: (docname, title of what it labels)}`` for every ``(label)=`` target of the book."""
    labels = {}
    for doc in _documents():
        lines = (ROOT / f"{doc}.md").read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = LABEL.match(line)
            if m:
                heading = next((x.lstrip("#").strip() for x in lines[i + 1 : i + 4] if x.startswith("#")), "")
                labels[m.group("label")] = (doc, heading or m.group("label"))
    return labels


def _title(doc: str, title: str, language: str) -> str:
    """A page's or section's title, as the edition of ``language`` writes it (from the page's catalogue)."""
    if language == "en" or not title:
        return title
    from translate_myst import catalogue

    return catalogue(doc, language).get(title, title)


def render_reference(role: str, content: str, docname: str, language: str = "en") -> str:
    text, target = _split_target(content)
    if role == "doc":
        base = docname.rsplit("/", 1)[0] if "/" in docname else ""
        doc = target.lstrip("/") if target.startswith("/") else "/".join(p for p in (base, target) if p)
        doc = re.sub(r"\.(md|ipynb)$", "", doc)
        return f"[{text or _title(doc, _documents().get(doc, doc), language)}]({page_url(doc, language=language)})"
    if role == "eq":
        return f"({target})"
    doc, title = _labels().get(target, (docname, target))
    text = text or _title(doc, title, language)
    if role == "numref":
        text = re.sub(r"\s*%s\s*", " ", text).strip() or title
    return f"[{text}]({page_url(doc, target.replace('_', '-').lower(), language)})"


# --- cells --------------------------------------------------------------------------------------------


def _render_roles(line: str, docname: str, glued: list[str], bib, language: str = "en") -> str:
    out, pos = [], 0
    for m in ROLE.finditer(line):
        out.append(line[pos : m.start()])
        name, content = m.group("name"), m.group("content")
        if name == "cite" or name.startswith("cite:"):
            out.append(render_citation(content, "".join(out), bib, language))
        elif name.startswith("glue"):
            key = content.split("::")[-1].split(":", 1)[0].strip()  # "doc.md::name:.1f" names a page too
            glued.append(key) if key not in glued else None
            out.append(f"`{key}`")
        elif name in ("doc", "ref", "numref", "eq"):
            out.append(render_reference(name, content, docname, language))
        elif name == "math":
            out.append(f"${content}$")
        elif name in ("code", "literal", "samp", "file", "command", "kbd"):
            out.append(f"`{content}`")
        else:  # {term}, {abbr}, {sub}, ...: the text alone
            out.append(_split_target(content)[1] if name == "term" else re.sub(r"\s*\(.*\)$", "", content))
        pos = m.end()
    out.append(line[pos:])
    return "".join(out)


def _directive_block(lines: list[str], start: int) -> tuple[int, dict, list[str]]:
    """The directive opened at ``lines[start]``: index after its closing fence, its options and its body."""
    m = FENCE_OPEN.match(lines[start])
    fence, indent = m.group("fence"), m.group("indent")
    i, options = start + 1, {}
    while i < len(lines) and re.match(rf"^{indent}:(\w[\w-]*):\s*(.*)$", lines[i]):
        key, value = re.match(rf"^{indent}:(\w[\w-]*):\s*(.*)$", lines[i]).groups()
        options[key] = value
        i += 1
    body = []
    while i < len(lines):
        line = lines[i]
        if line.strip() == fence:  # the closing fence: the same characters, the same length
            return i + 1, options, body
        body.append(line[len(indent) :] if line.startswith(indent) else line)
        i += 1
    raise ValueError(f"directive {lines[start].strip()!r} is never closed")


def _render_lines(lines: list[str], docname: str, glued: list[str], bib, language: str = "en") -> list[str]:
    out, i, code_fence = [], 0, None
    while i < len(lines):
        line = lines[i]
        if code_fence:  # inside a plain code block: nothing is rendered
            out.append(line)
            if line.strip().startswith(code_fence) and line.strip().strip(code_fence[0]) == "":
                code_fence = None
            i += 1
            continue
        m = FENCE_OPEN.match(line)
        if m:
            end, options, body = _directive_block(lines, i)
            out.extend(_render_directive(m.group("name"), m.group("arg").strip(), options, body, docname, glued, bib,
                                         language))
            i = end
            continue
        fence = CODE_FENCE.match(line)
        if fence:
            code_fence = fence.group(1)
            out.append(line)
        elif LABEL.match(line) or re.match(r"^\s*%", line):
            pass  # a (label)= target or a MyST comment: nothing to show
        else:
            out.append(_render_roles(line, docname, glued, bib, language))
        i += 1
    return out


def _render_directive(name, arg, options, body, docname, glued, bib, language="en") -> list[str]:
    inner = _render_lines(body, docname, glued, bib, language)
    while inner and not inner[0].strip():
        inner.pop(0)
    while inner and not inner[-1].strip():
        inner.pop()
    if name in ADMONITIONS:
        title = _render_roles(arg, docname, glued, bib, language) if arg else phrase(name.capitalize(), language)
        if name == "seealso" and not arg:
            title = phrase("See also", language)
        return [f"> **{title}**", ">"] + [f"> {x}".rstrip() for x in inner] + [""]
    if name == "figure":
        src = arg if re.match(r"^[a-z]+://", arg) else RAW_URL + "/".join(
            p for p in (docname.rsplit("/", 1)[0], arg) if p)
        caption = " ".join(x.strip() for x in inner if x.strip())
        return [f"![{options.get('alt', caption)}]({src})", "", f"*{caption}*" if caption else "", ""]
    if name == "image":
        return [f"![{options.get('alt', '')}]({arg})", ""]
    if name == "math":
        return ["$$", *inner, "$$", ""]
    if name in ("code-block", "code", "sourcecode"):
        return [f"```{arg}", *body, "```", ""]
    if name == "bibliography":
        url = page_url(BIBLIOGRAPHY, language=language)
        return [phrase("The bibliography is in the [book]({url}).", language).format(url=url), ""]
    if name in ("glue:figure", "glue:any", "glue", "glue:"):
        glued.append(arg) if arg not in glued else None
        return [phrase("(`{name}`: shown by the cells above)", language).format(name=arg), *inner, ""]
    return [*([f"**{_render_roles(arg, docname, glued, bib, language)}**", ""] if arg else []), *inner, ""]


def render_markdown(text: str, docname: str, bib: dict[str, tuple[str, str]] | None = None,
                    language: str = "en") -> str:
    """The plain-Markdown version of one markdown cell of the page ``docname`` (e.g. ``chapters/02_x``), its
    links into the edition of ``language`` (``text`` is already translated: see translate_myst.py)."""
    bib = read_bibliography() if bib is None else bib
    glued: list[str] = []
    lines = _render_lines(text.split("\n"), docname, glued, bib, language)
    while lines and not lines[-1].strip():
        lines.pop()
    if glued:
        names = ", ".join(f"`{g}`" for g in glued)
        note = phrase("{names}: printed by the cells above, where the book shows the numbers in the text.", language)
        lines += ["", f"*{note.format(names=names)}*"]
    return "\n".join(lines)


def raw_myst(text: str) -> list[str]:
    """What is left of MyST syntax in plain Markdown ``text``: roles, directive fences, labels."""
    found, code_fence = [], None
    for line in text.split("\n"):
        if code_fence:
            if line.strip().startswith(code_fence) and line.strip().strip(code_fence[0]) == "":
                code_fence = None
            continue
        if FENCE_OPEN.match(line) or LABEL.match(line):
            found.append(line.strip())
            continue
        fence = CODE_FENCE.match(line)
        if fence:
            code_fence = fence.group(1)
            continue
        found += [m.group(0) for m in ROLE.finditer(re.sub(r"``[^`]+``", "", line))]
    return found
