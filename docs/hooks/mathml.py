"""mkdocs hook: the math of every page becomes MathML when the site is built, so it shows without a script or network.

``pymdownx.arithmatex`` (generic mode, see mkdocs.yml) finds the math of a page
(``$...$``, ``\\(...\\)``, ``$$...$$``, ``\\[...\\]``, in pages and in docstrings
alike) and leaves it HTML-escaped as ``<span class="arithmatex">\\(TeX\\)</span>``
(inline) or ``<div class="arithmatex">\\[TeX\\]</div>`` (display). This hook
replaces each with the MathML that ``latex2mathml`` makes of the TeX, which
browsers typeset themselves (MathML Core). TeX it cannot convert, or a command it
does not know (it would leave ``\\command`` in the page), fails the build, naming
the page and the formula.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

ARITHMATEX = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.DOTALL)
DELIMITERS = {"span": ("\\(", "\\)"), "div": ("\\[", "\\]")}
UNCONVERTED = re.compile(r">[^<]*\\[A-Za-z]+")  # a TeX command left as the text of a MathML element


def mathml(tex: str, display: bool) -> str:
    """The MathML of ``tex`` (ValueError when it cannot be converted in full)."""
    try:
        converted = convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml's errors have no common base class
        raise ValueError(f"latex2mathml cannot convert it ({type(error).__name__}: {error})") from None
    left = UNCONVERTED.search(converted)
    if left is not None:
        raise ValueError(f"latex2mathml does not know {left.group(0)[1:].strip()!r}")
    return converted


def _replace(match: re.Match[str]) -> str:
    opening, closing = DELIMITERS[match["tag"]]
    tex = html.unescape(match["tex"]).strip()
    if tex.startswith(opening) and tex.endswith(closing):
        tex = tex[len(opening) : -len(closing)]
    return mathml(tex, display=match["tag"] == "div")


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    """The page's HTML with its arithmatex math as MathML."""
    try:
        return ARITHMATEX.sub(_replace, html_text)
    except ValueError as error:
        raise PluginError(f"{page.file.src_path}: a formula: {error}") from None
