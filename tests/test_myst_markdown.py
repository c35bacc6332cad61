"""scripts/myst_markdown.py: MyST roles and directives rendered as plain Markdown for the Colab notebooks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import myst_markdown as mm  # noqa: E402

BIB = ROOT / "book" / "references.bib"
BIB_URL = mm.BOOK_URL + "book/bibliography.html"


def render(text: str) -> str:
    return mm.render_markdown(text, "chapters/02_residual_connections")


def test_the_bibliography_gives_authors_and_years(tmp_path):
    bib = mm.read_bibliography(BIB)
    assert bib["he2016deep"] == ("He et al.", "2016a")  # one author list, one year, two works: a and b
    assert bib["he2016identity"] == ("He et al.", "2016b")
    assert bib["glorot2010understanding"] == ("Glorot and Bengio", "2010")
    assert bib["rw2019timm"] == ("Wightman", "2019")
    assert bib["torchvision2016"] == ("TorchVision maintainers and contributors", "2016")
    path = tmp_path / "x.bib"
    path.write_text("@article{k1,\n  author = {Doll{\\'a}r, Piotr and J{\\\"u}rgen Schmidhuber},\n  year = 2001\n}\n")
    assert mm.read_bibliography(path)["k1"] == ("Dollár and Schmidhuber", "2001")


def test_citations_become_links_to_the_bibliography():
    assert render("LeNet {cite}`lecun1998gradient` put") == f"LeNet [LeCun et al. (1998)]({BIB_URL}) put"
    assert render("as He et al. {cite}`he2016identity` show") == f"as He et al. ([2016b]({BIB_URL})) show"
    two = render("{cite}`glorot2010understanding,he2015delving`")
    assert two == f"[Glorot and Bengio (2010)]({BIB_URL}); [He et al. (2015)]({BIB_URL})"
    with pytest.raises(KeyError, match="nosuchkey"):
        render("{cite}`nosuchkey`")


def test_glued_values_point_to_the_output_that_prints_them():
    out = render("error {glue:text}`err_a:.1f`% and {glue:text}`err_b` and again {glue:text}`err_a:.2f`")
    first, _, note = out.partition("\n\n")
    assert first == "error `err_a`% and `err_b` and again `err_a`"
    assert note == "*`err_a`, `err_b`: printed by the cells above, where the book shows the numbers in the text.*"


def test_cross_references_link_into_the_published_book():
    out = render("see {doc}`05_gradient_flow` and {doc}`the intro </book/intro>`")
    assert f"[The mathematics of gradient flow]({mm.BOOK_URL}chapters/05_gradient_flow.html)" in out
    assert f"[the intro]({mm.BOOK_URL}book/intro.html)" in out
    assert render("{ref}`text <my-label>`") == f"[text]({mm.BOOK_URL}chapters/02_residual_connections.html#my-label)"
    assert render("{math}`x^2`") == "$x^2$"


def test_admonitions_become_blockquotes_with_a_bold_title_and_keep_their_code():
    src = "````{admonition} Solution 1\n:class: dropdown\n\n```python\nx = {1: 2}\n```\n\nSee {cite}`rw2019timm`.\n````"
    out = render("before\n\n" + src + "\n\nafter")
    assert out.split("\n") == [
        "before", "", "> **Solution 1**", ">", "> ```python", "> x = {1: 2}", "> ```", ">",
        f"> See [Wightman (2019)]({BIB_URL}).", "", "", "after"]
    assert render("```{note}\nBody.\n```").startswith("> **Note**\n>\n> Body.")


def test_figures_labels_comments_and_code_blocks():
    out = render("(fig-label)=\n% a comment\n```{figure} img/a.png\n:name: fig-a\n\nThe caption.\n```")
    assert out.startswith(f"![The caption.]({mm.RAW_URL}chapters/img/a.png)\n\n*The caption.*")
    code = "```python\nprint('{cite}`x`')\n```"
    assert render(code) == code  # inside a code block nothing is rendered


def test_raw_myst_finds_what_colab_would_show_raw():
    assert mm.raw_myst("a {cite}`x` b") == ["{cite}`x`"]
    assert mm.raw_myst("```{note}\nx\n```") == ["```{note}"]
    assert mm.raw_myst("(label)=") == ["(label)="]
    assert mm.raw_myst("```python\n{cite}`x`\n```\n$\\frac{a}{b}$") == []
    with pytest.raises(ValueError, match="never closed"):
        render("```{note}\nno end")
