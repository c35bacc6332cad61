"""The Chinese edition (中文版): its translation catalogues, its glossary, its figure labels, and the built book.

The catalogues are ``locales/zh_CN/LC_MESSAGES/<page>.po``, one per page of ``_toc.yml`` (CONTRIBUTING.md).
The completeness test extracts the English strings afresh from the sources (Sphinx's gettext builder, notebooks
not executed, a few seconds), so an English change without its translation fails it, even before anyone has
run ``make gettext``. Pages whose translation is still under way are listed in ``PENDING``: their completeness
tests are expected failures (strict, so a page that becomes complete must leave the list), and the test ids
name each page, so ``pytest tests/test_zh.py -rxX`` shows exactly which pages are incomplete.

The checks on the built book (``_build/html-zh``, from ``make book-zh``) are skipped when it is not built,
unless ``RESNET_TUTORIAL_REQUIRE_ZH=1`` (``make zh-check``) makes that a failure. The language-switch test also
needs the English book (``_build/html``, ``make book``) and headless Chromium, driven by Playwright as in
test_book_html.py.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locales" / "zh_CN" / "LC_MESSAGES"
HTML_EN = ROOT / "_build" / "html"
HTML_ZH = ROOT / "_build" / "html-zh"
REQUIRE_BUILT = bool(os.environ.get("RESNET_TUTORIAL_REQUIRE_ZH"))

# Pages whose Chinese translation is not finished: their completeness (and, in the built book, Chinese-prose)
# tests are expected to fail. Remove a page when its catalogue is complete; empty the set to require it all.
PENDING: set[str] = set()

# The glossary's fixed renderings (book/glossary.md) and renderings that rival them: no translated string may
# use a rival. Each English phrase, where a source string has it, must be rendered by its fixed term.
RIVALS = {
    "残差块": ["残差模块", "残差单元"],
    "批量归一化": ["批归一化", "批标准化", "批量标准化", "批规范化", "批次归一化", "批量规范化"],
    "恒等映射": ["恒等变换", "身份映射", "单位映射"],
    "捷径": ["快捷连接", "短路连接", "跳层连接", "跨层连接", "快捷方式"],
    "感受野": ["接受野", "感受域", "感知野"],
    "梯度消失": ["梯度弥散"],
    "全局平均池化": ["全局均值池化"],
    "微调": ["精调"],
    "瓶颈块": ["瓶颈模块", "瓶颈单元"],
    "学习率": ["学习速率"],
    "批量大小": ["批大小", "批次大小"],
    "预激活": ["前激活"],
    "普通网络": ["朴素网络", "平坦网络", "平凡网络", "平原网络"],
    "残差连接": ["残差链接"],
    "轮次": ["时期", "纪元", "回合"],
    "骨干网络": ["主干网络"],  # 主干 is the stem
}
REQUIRED = {  # English phrase (a regular expression, case-insensitive) -> the term its translation must contain
    r"\bresidual blocks?\b": "残差块",
    r"\bbatch[ -]norm(ali[sz]ation)?\b": "批量归一化",
    r"\bidentity mappings?\b": "恒等映射",
    r"\breceptive fields?\b": "感受野",
    r"\bglobal average pooling\b": "全局平均池化",
    r"\bvanishing gradients?\b": "梯度消失",
    r"\bdegradation problem\b": "退化问题",
    r"\bbottleneck blocks?\b": "瓶颈块",
    r"\bfine-tun(e|ed|ing)\b": "微调",
    r"\bpre-activation\b": "预激活",
    r"\blearning rates?\b": "学习率",
    r"\bbatch sizes?\b": "批量大小",
    r"\bplain networks?\b": "普通网络",
    r"\bresidual connections?\b": "残差连接",
}


# ------------------------------------------------------------------------------------------ the catalogues


def toc_pages() -> list[str]:
    """The root page and every file of _toc.yml, as Sphinx document names."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    root = re.search(r"^root:\s*(\S+)", toc, re.M).group(1)
    files = re.findall(r"^\s*-\s*file:\s*(\S+?)(?:\.md)?\s*$", toc, re.M)
    return [root.removesuffix(".md")] + files


def read_catalogue(path: Path) -> dict[str, tuple[str, bool]]:
    """msgid -> (msgstr, fuzzy) of a .po or .pot file (the header entry left out)."""
    from babel.messages.pofile import read_po

    with open(path, "rb") as f:
        catalogue = read_po(f)
    return {m.id: (m.string or "", "fuzzy" in m.flags) for m in catalogue if m.id and isinstance(m.id, str)}


def prose_mentions(page: str, term: str) -> bool:
    """Whether the Chinese prose of ``page`` (its catalogue's translations) contains ``term``."""
    po = LOCALE / f"{page}.po"
    return po.exists() and any(term in text for text, _ in read_catalogue(po).values())


#: At least this many chapters use 残差 in their Chinese prose, so the search checks cannot pass empty.
MIN_CHAPTERS_WITH_RESIDUAL = 5


def untranslated(template: list[str], catalogue: dict[str, tuple[str, bool]]) -> tuple[list[str], list[str]]:
    """The msgids of ``template`` that ``catalogue`` leaves untranslated (missing or empty), and the fuzzy ones."""
    missing = [m for m in template if not catalogue.get(m, ("", False))[0]]
    fuzzy = [m for m in template if catalogue.get(m, ("", False))[0] and catalogue[m][1]]
    return missing, fuzzy


EXTRACT = """
import sys
from pathlib import Path
from jupyter_book.config import get_final_config
from sphinx.application import Sphinx
root, out = Path(sys.argv[1]), Path(sys.argv[2])
conf, _ = get_final_config(user_yaml=root / "_config.yml", sourcedir=root,
                           cli_config={"external_toc_path": "_toc.yml", "latex_individualpages": False})
conf["nb_execution_mode"] = "off"
app = Sphinx(str(root), None, str(out), str(out / ".doctrees"), "gettext", confoverrides=conf,
             status=None, warning=None, freshenv=True)
app.build()
"""


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, list[str]]:
    """The English strings of every page, extracted now from the sources (what `make gettext` extracts)."""
    out = tmp_path_factory.mktemp("gettext")
    subprocess.run([sys.executable, "-c", EXTRACT, str(ROOT), str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    found = {p.relative_to(out).with_suffix("").as_posix(): list(read_catalogue(p)) for p in out.rglob("*.pot")}
    assert found, "the gettext builder wrote no templates"
    return found


def _page_params(pages):
    return [pytest.param(p, id=p, marks=[pytest.mark.xfail(reason="translation pending", strict=True)]
                         if p in PENDING else []) for p in pages]


def test_untranslated_reports_empty_missing_and_fuzzy_strings():
    catalogue = {"a": ("甲", False), "b": ("", False), "c": ("丙", True)}
    assert untranslated(["a", "b", "c", "d"], catalogue) == (["b", "d"], ["c"])
    assert untranslated(["a"], catalogue) == ([], [])


@pytest.mark.parametrize("page", _page_params(toc_pages()))
def test_catalogue_is_complete(page: str, templates):
    assert page in templates, f"no strings extracted for {page}"
    po = LOCALE / f"{page}.po"
    assert po.exists(), f"no catalogue {po.relative_to(ROOT)}: run `make gettext` and translate it"
    missing, fuzzy = untranslated(templates[page], read_catalogue(po))
    n = len(templates[page])
    assert not missing and not fuzzy, (
        f"{page}: {n - len(missing) - len(fuzzy)} of {n} strings translated, {len(missing)} untranslated, "
        f"{len(fuzzy)} fuzzy (run `make gettext`, then translate {po.relative_to(ROOT)}); first: "
        f"{(missing + fuzzy)[0][:120]!r}")


def test_no_catalogue_for_a_page_that_is_not_in_the_book():
    pages = set(toc_pages())
    stale = [p.relative_to(LOCALE).with_suffix("").as_posix() for p in LOCALE.rglob("*.po")]
    assert not [p for p in stale if p not in pages], "catalogues of pages no longer in _toc.yml"


GLUE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$]+\$", re.S)


def markup(text: str) -> dict[str, Counter]:
    """What a translation must carry over unchanged: roles (citations, references), glue keys, math, inline
    code and link targets."""
    rest = ROLE.sub("", MATH.sub("", text))
    return {
        "roles": Counter((r, t) for r, t in ROLE.findall(text) if not r.startswith("glue")),
        "glue": Counter(t.split("::")[-1].removesuffix(":s") for t in GLUE.findall(text)),
        "math": Counter(MATH.findall(text)),
        "code": Counter(re.findall(r"`([^`]+)`", rest)),
        "links": Counter(re.findall(r"\]\(([^)\s]+)\)", text)),
    }


def translated_entries():
    for po in sorted(LOCALE.rglob("*.po")):
        page = po.relative_to(LOCALE).with_suffix("").as_posix()
        for msgid, (msgstr, fuzzy) in read_catalogue(po).items():
            if msgstr and not fuzzy:
                yield page, msgid, msgstr


def test_translations_keep_citations_math_code_links_and_glue():
    problems = []
    for page, msgid, msgstr in translated_entries():
        source, target = markup(msgid), markup(msgstr)
        for kind in source:
            if source[kind] != target[kind]:
                problems.append(f"{page}: {kind} {dict(source[kind] - target[kind])} lost, "
                                f"{dict(target[kind] - source[kind])} added in {msgstr[:60]!r}")
    assert not problems, "\n".join(problems[:20])


def test_glue_in_translations_names_its_document_with_the_suffix_and_a_format():
    """A glue role in a translated string is parsed without the notebook's glue data: it must name its
    document, with the suffix (`04_from_scratch.md::key`), or the number disappears from the page. And a
    `{glue:text}` role needs a format spec after the key (`:s` where the English has none), because myst-nb
    splits the format off at the last colon, which without one is the second colon of `::`."""
    wrong = []
    for page, _, msgstr in translated_entries():
        own = Path(page).name + ".md::"
        for role in re.finditer(r"\{glue(:\w+)?\}`([^`]*)`", msgstr):
            kind, key = role.group(1), role.group(2)
            if not key.startswith(own) or (kind == ":text" and ":" not in key[len(own):]):
                wrong.append(f"{page}: {role.group(0)}")
    assert not wrong, f"glue roles must read {{glue:text}}`NAME.md::key:format`: {wrong[:10]}"


def glossary() -> list[tuple[str, str]]:
    """(English, 中文) pairs of the tables of book/glossary.md."""
    rows = []
    for line in (ROOT / "book" / "glossary.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and cells[0] != "English":
            rows.append((cells[0], cells[1]))
    return rows


def test_glossary_fixes_the_source_articles_terms():
    terms = {zh for _, zh in glossary()}
    article = ["残差网络", "残差块", "残差连接", "恒等映射", "梯度消失", "梯度爆炸", "瓶颈结构", "批量归一化",
               "退化问题", "微调", "全局平均池化", "感受野"]
    assert not [t for t in article if t not in terms]
    english = [en for en, _ in glossary()]
    assert len(english) == len(set(english)), "an English term is listed twice"
    for fixed, rivals in RIVALS.items():
        assert not [r for r in rivals if r in terms], f"the glossary itself uses a rival of {fixed}"


def test_no_translation_uses_a_rival_rendering_of_a_glossary_term():
    from resnet_tutorial.plots import LABELS_ZH

    # a rival that the English text itself quotes (the glossary names one) is a quotation, not a rendering
    strings = [(page, i, s) for page, i, s in translated_entries()]
    strings += [("plots.LABELS_ZH", k, s) for k, s in LABELS_ZH.items()]
    found = [f"{page}: {rival} (fixed: {fixed}) in {s[:50]!r}" for page, msgid, s in strings
             for fixed, rivals in RIVALS.items() for rival in rivals if rival in s and rival not in msgid]
    assert not found, "\n".join(found[:20])


def test_each_term_is_rendered_by_its_fixed_chinese_term():
    wrong = []
    for page, msgid, msgstr in translated_entries():
        if msgstr == msgid:  # kept as it is on purpose (the English column of the glossary, a formula)
            continue
        for english, term in REQUIRED.items():
            if re.search(english, msgid, re.I) and term not in msgstr:
                wrong.append(f"{page}: {english!r} not rendered as {term} in {msgstr[:60]!r}")
    assert not wrong, "\n".join(wrong[:20])


def test_the_rival_check_can_fail():
    assert any(r in "堆叠若干残差模块" for r in RIVALS["残差块"])
    assert re.search(list(REQUIRED)[0], "Each residual block adds", re.I)


def test_search_dictionary_has_every_glossary_term():
    words = {line.split()[0] for line in (ROOT / "locales" / "zh_CN" / "search_dict.txt").read_text(
        encoding="utf-8").splitlines() if line.strip()}
    missing = [zh for _, zh in glossary() if not zh[0].isascii() and zh not in words]
    assert not missing, f"add to locales/zh_CN/search_dict.txt: {missing}"
    assert "残差" in words


# ------------------------------------------------------------------------------------------- figure labels


def test_label_is_english_by_default_and_chinese_in_the_chinese_edition(monkeypatch):
    from resnet_tutorial import plots

    monkeypatch.delenv(plots.LANGUAGE_VARIABLE, raising=False)
    assert plots.label("train error") == "train error"
    assert plots.label("aug {i}", i=3) == "aug 3"
    monkeypatch.setenv(plots.LANGUAGE_VARIABLE, "zh_CN")
    if not _cjk_font_installed():
        pytest.skip("no CJK font: apt-get install fonts-noto-cjk (make book-zh installs it as root)")
    assert plots.label("train error") == "训练误差"
    assert plots.label("aug {i}", i=3) == "增强 3"
    with pytest.raises(KeyError, match="no zh_CN translation"):
        plots.label("a label nobody translated")
    monkeypatch.setenv(plots.LANGUAGE_VARIABLE, "xx")
    with pytest.raises(ValueError, match="RESNET_TUTORIAL_LANGUAGE"):
        plots.label("train error")


def test_class_names_are_chinese_in_the_chinese_edition_where_the_table_has_them(monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt
    import torch

    from resnet_tutorial import plots
    from resnet_tutorial.data import load_dataset

    monkeypatch.delenv(plots.LANGUAGE_VARIABLE, raising=False)
    assert plots.class_label("Coat") == "Coat" and plots.class_label("7") == "7"
    monkeypatch.setenv(plots.LANGUAGE_VARIABLE, "zh_CN")
    if not _cjk_font_installed():
        pytest.skip("no CJK font: apt-get install fonts-noto-cjk (make book-zh installs it as root)")
    classes = load_dataset("fashion-mnist").classes
    assert set(classes) == set(plots.CLASSES_ZH)  # every Fashion-MNIST class, spelled as torchvision does
    assert [plots.class_label(c) for c in classes[:2]] == ["T恤/上衣", "裤子"]
    assert plots.class_label("7") == "7" and plots.class_label("bricks") == "bricks"  # digits, folders
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["DejaVu Sans"])
    plots.class_label("Coat")  # a Chinese name puts the CJK font behind the default one
    assert matplotlib.rcParams["font.family"][0] == "DejaVu Sans"
    assert matplotlib.rcParams["font.family"][1] in plots.CJK_FONTS
    fig, ax = plt.subplots()
    plots.plot_confusion_matrix(torch.eye(10, dtype=torch.long), classes, ax=ax)
    assert ax.get_yticklabels()[4].get_text() == "外套"
    plots.show_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [4, 7], classes, ax=ax)
    assert {"外套", "运动鞋"} <= {t.get_text() for t in ax.texts}
    plt.close(fig)


def _chapter_code(md: Path):
    """The chapter's code cells joined into one module (IPython magics and shell lines left out), and
    the line in the .md of each line of it, for messages that point at the chapter's source."""
    lines, where, inside, options = [], [], False, False
    for number, line in enumerate(md.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```{code-cell}"):
            inside = options = True
        elif inside and line.startswith("```"):
            inside = False
        elif inside and options and re.match(r"^:[\w-]+:", line):
            continue  # a cell option (:tags: [hide-input])
        elif inside:
            options = False
            if not line.lstrip().startswith(("%", "!")):
                lines.append(line)
                where.append(number)
    return ast.parse("\n".join(lines), filename=md.name), where


def _is_plots_label(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "label" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "plots")


# The reader-visible text of a figure: (method, position of the text among the positional arguments).
FIGURE_TEXT = {"set_title": 0, "set_xlabel": 0, "set_ylabel": 0, "suptitle": 0, "supxlabel": 0,
               "supylabel": 0, "text": 2, "annotate": 0}
# Calls whose ``label=`` / ``title=`` keyword is a legend entry or a title.
PLOTTING = {"plot", "bar", "barh", "scatter", "fill_between", "hist", "errorbar", "step", "axhline",
            "axvline", "axhspan", "axvspan", "stairs", "legend", "plot_history", "plot_grad_norms",
            "plot_confusion_matrix", "show_images", "add_patch", "Rectangle", "imshow"}


def _words(text: str) -> bool:
    """Whether a string the code writes has words in it: a run of two letters or more, unless the string
    is a formula (no space, and one of / | _ = ^ $ in it: "df/dt", "|dL/dx_l|"), which is no language's."""
    formula = " " not in text and any(c in text for c in "/|_=^$")
    return bool(re.search(r"[^\W\d_]{2,}", text)) and not formula


def _bare_text(node) -> bool:
    """A string the code wrote itself (a literal with words in it, an f-string whose fixed parts have
    words, a concatenation or conditional of them) rather than one that went through plots.label."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _words(node.value)
    if isinstance(node, ast.JoinedStr):
        return _words("{}".join(v.value if isinstance(v, ast.Constant) else "" for v in node.values))
    if isinstance(node, ast.BinOp):
        return _bare_text(node.left) or _bare_text(node.right)
    if isinstance(node, ast.IfExp):
        return _bare_text(node.body) or _bare_text(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _bare_text(node.func.value)
    return False


def _figure_texts_not_translated(md: Path) -> list[str]:
    tree, where = _chapter_code(md)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _is_plots_label(node):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", None))
        texts = []
        if name in FIGURE_TEXT and isinstance(node.func, ast.Attribute):
            position = FIGURE_TEXT[name]
            if len(node.args) > position:
                texts.append(node.args[position])
            texts += [k.value for k in node.keywords if k.arg in ("label", "s", "text", "t", "xlabel",
                                                                  "ylabel")]
        if name in PLOTTING or name in FIGURE_TEXT:
            texts += [k.value for k in node.keywords if k.arg in ("label", "title")]
        for text in texts:
            if _bare_text(text):
                found.append(f"{md.name}:{where[text.lineno - 1]}: {name}({ast.unparse(text)[:60]})")
    return found


def test_chapters_draw_figure_text_through_plots_label():
    """Every title, axis label, legend entry and annotation a chapter writes goes through plots.label,
    so that the Chinese edition draws it in Chinese (a bare literal or f-string would stay English)."""
    chapters = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
    assert len(chapters) >= 10
    found = [hit for md in chapters for hit in _figure_texts_not_translated(md)]
    assert not found, "wrap these in plots.label(\"...\", field=value):\n" + "\n".join(found)


def test_the_figure_text_check_can_fail(tmp_path):
    md = tmp_path / "99_x.md"
    md.write_text("```{code-cell} ipython3\n:tags: [hide-input]\n%matplotlib inline\n"
                  "ax.set_title(f'{n} runs')\nax.plot(x, y, label='train')\nax.text(0, 1, 'note')\n"
                  "ax.set_xlabel('train' if a else plots.label('test'))\n"
                  "ax.set_ylabel(plots.label('error')); ax.set_xlabel(''); ax.text(0, 1, '5%')\n"
                  "fig.legend(h, title='digit')\ncheck('a claim', True)\nax.set_ylabel('df/dt')\n"
                  "ax.set_title(f'{name}: r = {r:.2f}'); ax.set_title(f'{n} of {m}')\n```\n",
                  encoding="utf-8")
    found = _figure_texts_not_translated(md)
    assert [f.split(": ", 1)[1].split("(")[0] for f in found] == [
        "set_title", "plot", "text", "set_xlabel", "legend", "set_title"], found
    assert found[0].startswith("99_x.md:4:")


def test_every_label_a_chapter_draws_has_a_chinese_translation():
    from resnet_tutorial.plots import LABELS_ZH

    calls = []
    for md in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md")):
        tree, _ = _chapter_code(md)
        calls += [(md.name, node.args[0].value) for node in ast.walk(tree) if _is_plots_label(node)
                  and node.args and isinstance(node.args[0], ast.Constant)]
        text = md.read_text(encoding="utf-8")  # and the calls in markdown outside code cells, if any
        for literal in re.findall(r"\bplots\.label\(\s*((?:\"[^\"]*\"\s*)+)", text):
            calls.append((md.name, ast.literal_eval(f"({literal})")))
    assert calls, "no chapter calls plots.label"
    missing = [f"{name}: {text!r}" for name, text in calls if text not in LABELS_ZH]
    assert not missing, f"add to resnet_tutorial.plots.LABELS_ZH: {missing}"


def _cjk_font_installed() -> bool:
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    return "CJK" in out or "Hei" in out


GLYPHS = """
import warnings
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import resnet_tutorial  # in a translated edition this gives matplotlib its CJK font
fig, axes = plt.subplots(1, 2)  # axes made before any label: their title and labels exist already
from resnet_tutorial import plots
labels = [plots.label(k) for k in plots.LABELS_ZH if "{" not in k]
axes[0].set_title(labels[0]); axes[0].set_xlabel(labels[1]); axes[0].set_ylabel(labels[2])
for i, text in enumerate(labels):
    axes[1].text(0, i / len(labels), text)
plots.plot_history  # the package's own plots use the same labels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fig.savefig(__import__("io").BytesIO(), format="png")
print([str(w.message) for w in caught if "missing from font" in str(w.message)])
"""


def test_chinese_figures_have_every_glyph():
    """Every Chinese label draws without matplotlib's "Glyph ... missing" warning, on axes created before the
    first label (a fresh process, as a notebook kernel of `make book-zh` is)."""
    if not _cjk_font_installed():
        if REQUIRE_BUILT:
            pytest.fail("no CJK font: apt-get install fonts-noto-cjk")
        pytest.skip("no CJK font: apt-get install fonts-noto-cjk")
    out = subprocess.run([sys.executable, "-c", GLYPHS], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RESNET_TUTORIAL_LANGUAGE": "zh_CN", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]


# ---------------------------------------------------------------------------------------- the built book


def _need(path: Path, what: str):
    if not (path / "index.html").exists():
        if REQUIRE_BUILT:
            pytest.fail(f"no built {what} in {path}")
        pytest.skip(f"the {what} is not built")


class _Prose(HTMLParser):
    """The prose paragraphs of a page's article: <p> outside code cells, outputs, code, math and tables (whose
    cells are often names and code)."""

    SKIP = ("cell_output", "cell_input", "highlight", "math", "bibliography", "citation", "toctree-wrapper")

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.in_article = 0
        self.paragraphs: list[str] = []
        self.current: list[str] | None = None

    def skipping(self):
        return any(skip for _, skip in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        skip = tag in ("code", "pre", "script", "style", "table") or bool(classes.intersection(self.SKIP))
        if tag in ("br", "img", "hr", "input", "meta", "link", "wbr"):
            return
        self.stack.append((tag, skip))
        if tag == "article":
            self.in_article += 1
        if tag == "p" and self.in_article and not self.skipping():
            self.current = []

    def handle_endtag(self, tag):
        if tag not in [t for t, _ in self.stack]:  # a stray end tag closes nothing
            return
        while self.stack:
            top, _ = self.stack.pop()
            if top == "article":
                self.in_article -= 1
            if top == "p" and self.current is not None:
                text = " ".join("".join(self.current).split())
                if text:
                    self.paragraphs.append(text)
                self.current = None
            if top == tag:
                break

    def handle_data(self, data):
        if self.current is not None and not self.skipping():
            self.current.append(data)


CJK = re.compile(r"[\u3400-\u9fff]")


def is_chinese(paragraph: str) -> bool:
    """A paragraph in Chinese: its CJK characters outnumber a fifth of its Latin letters (code, math and
    names of models stay Latin)."""
    cjk = len(CJK.findall(paragraph))
    latin = len(re.findall(r"[A-Za-z]", paragraph))
    return cjk > 0 and cjk >= latin / 5


def prose(path: Path) -> list[str]:
    parser = _Prose()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.paragraphs


def test_is_chinese_tells_the_languages_apart():
    assert is_chinese("整个瓶颈块的计算量是一个 3×3 卷积的 8.5 分之一，而沿捷径传递的信号保留了全部 256 个通道。")
    assert not is_chinese("A whole bottleneck block costs 8.5 times less than one 3×3 convolution.")
    assert not is_chinese("The 残差块 of ResNet-50 is a bottleneck block with three convolutions.")


@pytest.mark.parametrize("page", _page_params([p for p in toc_pages() if p.startswith("chapters/")]))
def test_chapter_prose_is_chinese(page: str):
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    path = HTML_ZH / f"{page}.html"
    assert path.exists(), f"{page} was not built"
    text = path.read_text(encoding="utf-8")
    assert re.search(r"<html[^>]*\blang=\"zh-CN\"", text), f"{page}: not marked as zh-CN"
    paragraphs = prose(path)
    assert len(paragraphs) >= 5, f"{page}: only {len(paragraphs)} prose paragraphs found"
    english = [p for p in paragraphs if not is_chinese(p)]
    share = 1 - len(english) / len(paragraphs)
    assert share >= 0.9, f"{page}: {share:.0%} of {len(paragraphs)} paragraphs Chinese; English: {english[:3]}"


def test_the_english_prose_test_would_fail_on_the_english_book():
    _need(HTML_EN, "English book (make book)")
    page = next((p for p in toc_pages() if p.startswith("chapters/") and (HTML_EN / f"{p}.html").exists()), None)
    assert page, "no chapter in the English book"
    paragraphs = prose(HTML_EN / f"{page}.html")
    assert paragraphs and sum(map(is_chinese, paragraphs)) / len(paragraphs) < 0.1


# ------------------------------------------------------------------------------------------ Colab notebooks
CHAPTER_SOURCES = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


def _notebook(path: Path) -> dict:
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make notebooks`"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("source", CHAPTER_SOURCES, ids=lambda p: p.stem)
def test_chinese_colab_notebook_has_the_english_code_and_chinese_prose(source: Path):
    """chapters/zh_CN/NN.ipynb: the English notebook's cells, ids and code exactly; every markdown block
    translated from the catalogue; its links go to the Chinese edition."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from myst_markdown import BOOK_URL, raw_myst
    from translate_myst import translate_markdown

    english = _notebook(source.with_suffix(".ipynb"))
    chinese = _notebook(source.parent / "zh_CN" / source.with_suffix(".ipynb").name)
    assert [(c["cell_type"], c["id"]) for c in chinese["cells"]] == [(c["cell_type"], c["id"]) for c in english["cells"]]
    code = [(en, zh) for en, zh in zip(english["cells"], chinese["cells"], strict=True) if en["cell_type"] == "code"]
    for en, zh in code[1:]:
        assert (zh["source"], zh["metadata"]) == (en["source"], en["metadata"]), "code cells must be shared"
    # the Colab install cell: the English one, then a CJK font and the Chinese figure labels
    install_en, install_zh = ("".join(cell["source"]) for cell in code[0])
    assert install_zh.startswith(install_en) and code[0][0]["metadata"] == code[0][1]["metadata"]
    assert "fonts-noto-cjk" in install_zh and 'os.environ["RESNET_TUTORIAL_LANGUAGE"] = "zh_CN"' in install_zh
    markdown = ["".join(c["source"]) for c in chinese["cells"] if c["cell_type"] == "markdown"]
    assert not [raw_myst(m) for m in markdown if raw_myst(m)]
    blocks = [b for m in markdown for b in re.split(r"\n\s*\n", m) if re.search(r"[A-Za-z\u3400-\u9fff]", b)]
    english_blocks = [b for b in blocks if not is_chinese(b) and not b.lstrip().startswith(("$$", "```", "|"))]
    assert len(english_blocks) <= 0.1 * len(blocks), f"English blocks in the Chinese notebook: {english_blocks[:3]}"
    page = f"chapters/{source.stem}"
    missing = []
    for cell in jupytext.read(source, fmt="md:myst").cells:
        if cell.cell_type == "markdown":
            missing += translate_markdown(cell.source, page, "zh_CN")[1].missing
    assert not missing, f"{page}: blocks without a translation: {missing[:3]}"
    links = re.findall(r"\]\((" + re.escape(BOOK_URL) + r"[^)]*)\)", "\n".join(markdown))
    assert links and all(link.startswith(BOOK_URL + "zh/") for link in links), "links must open the Chinese book"


def test_the_notebook_test_would_fail_on_an_english_notebook():
    english = ["".join(c["source"]) for c in _notebook(CHAPTER_SOURCES[1].with_suffix(".ipynb"))["cells"]
               if c["cell_type"] == "markdown"]
    blocks = [b for m in english for b in re.split(r"\n\s*\n", m) if re.search(r"[A-Za-z]", b)]
    assert sum(map(is_chinese, blocks)) < 0.1 * len(blocks)


def _colab_links(path: Path) -> list[str]:
    return re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", _page_params([p for p in toc_pages() if p.startswith("chapters/")]))
def test_chinese_edition_colab_button_opens_the_chinese_notebook(page: str):
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    name = Path(page).name + ".ipynb"
    links = _colab_links(HTML_ZH / f"{page}.html")
    assert links, f"{page}: no Colab button in the Chinese edition"
    assert all(link.endswith(f"/chapters/zh_CN/{name}") for link in links), links
    assert (ROOT / "chapters" / "zh_CN" / name).exists()
    if (HTML_EN / f"{page}.html").exists():  # and the English edition's opens the English one
        english = _colab_links(HTML_EN / f"{page}.html")
        assert english and all(link.endswith(f"/blob/main/chapters/{name}") for link in english), english


def test_every_page_of_both_editions_loads_the_language_switch():
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    editions = [HTML_ZH] + ([HTML_EN] if (HTML_EN / "index.html").exists() else [])
    pages = [p for base in editions for p in base.rglob("*.html") if "_static" not in p.parts]
    without = [str(p.relative_to(ROOT)) for p in pages if "language-switch.js" not in (text := p.read_text(
        encoding="utf-8")) and 'http-equiv="Refresh"' not in text]  # index.html only redirects
    assert not without, f"pages without the language switch: {without[:10]}"


def test_the_theme_speaks_chinese():
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    search = (HTML_ZH / "search.html").read_text(encoding="utf-8")
    assert "搜索" in search, "the search page is not in Chinese"
    chapter = next(p for p in toc_pages() if p.startswith("chapters/") and p not in PENDING)
    assert (HTML_ZH / f"{chapter}.html").exists(), f"{chapter} was not built"
    assert re.search(r"<title>[^<]*[\u4e00-\u9fff]", (HTML_ZH / f"{chapter}.html").read_text(encoding="utf-8"))


def search_index(base: Path) -> dict:
    text = (base / "searchindex.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1: text.rindex(")")])


def test_search_index_finds_the_chapters_under_chinese_terms():
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    index = search_index(HTML_ZH)
    docs = index["docnames"]

    def found(term):  # Sphinx indexes a word of a page's headings under titleterms, and not again in terms
        hits = [index[kind].get(term, []) for kind in ("terms", "titleterms")]
        return {docs[i] for h in hits for i in ([h] if isinstance(h, int) else h)}

    for term in ("残差", "残差块", "梯度", "感受野"):
        assert found(term), f"searchindex.js has no term {term} (is jieba installed?)"
    hits = found("残差")
    # the chapters whose Chinese prose says 残差 (fine-tuning, say, may never need the word)
    chapters = [p for p in toc_pages() if p.startswith("chapters/") and p not in PENDING and p in docs
                and prose_mentions(p, "残差")]
    assert len(chapters) >= MIN_CHAPTERS_WITH_RESIDUAL and not [c for c in chapters if c not in hits], f"残差 does not find {set(chapters) - hits}"


# Headless Chromium: the language switch in both site layouts, and the search page.


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's, Debian package ``chromium``), driven by Playwright as in
    test_book_html.py."""
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRE_BUILT:
            raise
        pytest.skip("Playwright is not installed (pip install playwright; it drives the system Chromium)")
    import shutil

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (make html-check installs it as root)")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu",
                                                                "--disable-dev-shm-usage"])
        yield instance
        instance.close()


def _serve(directory: Path):
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module", params=["build folders", "published site"])
def layout(request, tmp_path_factory):
    """(base URL of the English edition, of the Chinese edition) in the two layouts the switch knows:
    _build/html and _build/html-zh side by side, and the published site with the Chinese edition at /zh/."""
    _need(HTML_ZH, "Chinese edition (make book-zh)")
    _need(HTML_EN, "English book (make book)")
    if request.param == "build folders":
        server, url = _serve(ROOT / "_build")
        bases = (f"{url}/html", f"{url}/html-zh")
    else:
        site = tmp_path_factory.mktemp("site")
        for item in HTML_EN.iterdir():
            (site / item.name).symlink_to(item)
        (site / "zh").symlink_to(HTML_ZH)
        server, url = _serve(site)
        bases = (url, f"{url}/zh")
    yield bases
    server.shutdown()
    server.server_close()


SWITCH = "(() => { const a = document.querySelector('a.language-switch'); return a ? a.href : null; })()"


def _switch_target(browser, url: str) -> str | None:
    """Open ``url`` (it must load: status 200) and return where its language switch leads (None: no switch)."""
    tab = browser.new_page()
    try:
        response = tab.goto(url, wait_until="load", timeout=60_000)
        assert response is not None and response.ok, f"{url} does not load"
        try:
            tab.wait_for_selector("a.language-switch", timeout=10_000)
        except Exception:
            return None
        return tab.evaluate(SWITCH)
    finally:
        tab.close()


def test_language_switch_goes_both_ways(browser, layout):
    en, zh = layout
    pages = [p for p in toc_pages() if (HTML_ZH / f"{p}.html").exists()]
    assert pages
    for page in pages:
        target = _switch_target(browser, f"{en}/{page}.html")
        assert target == f"{zh}/{page}.html", f"English {page}: the switch leads to {target}"
        back = _switch_target(browser, target)  # loads the Chinese page: the link resolves
        assert back == f"{en}/{page}.html", f"Chinese {page}: the switch leads to {back}"


def test_search_page_finds_the_chapters_for_a_chinese_query(browser):
    server, url = _serve(HTML_ZH)
    tab = browser.new_page()
    try:
        tab.goto(f"{url}/search.html?q={quote('残差')}", wait_until="load", timeout=60_000)
        # Sphinx lists the results one by one, then writes its summary line ("搜索完成…")
        tab.wait_for_function("(document.querySelector('#search-results p.search-summary') || {}).textContent",
                              timeout=30_000)
        results = tab.evaluate("[...document.querySelectorAll('#search-results li a')]"
                               ".map(a => a.getAttribute('href'))")
    finally:
        tab.close()
        server.shutdown()
        server.server_close()
    assert results, "searching 残差 in the Chinese edition found nothing"
    chapters = [p for p in toc_pages() if p.startswith("chapters/") and p not in PENDING
                and (HTML_ZH / f"{p}.html").exists() and prose_mentions(p, "残差")]
    assert len(chapters) >= MIN_CHAPTERS_WITH_RESIDUAL
    missing = [c for c in chapters if not any(r and r.split("#")[0].endswith(f"{c}.html") for r in results)]
    assert not missing, f"searching 残差 does not list {missing}"
