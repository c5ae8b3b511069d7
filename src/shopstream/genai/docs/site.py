"""Write the pages: Markdown under ``<out>/markdown/``, a static HTML site under ``<out>/site/``
(one HTML file per page, ``index.html``, one stylesheet).

Markdown becomes HTML with markdown-it-py (CommonMark + tables; raw HTML in the text is
escaped, never passed through). Links between pages (``*.md``) become ``*.html``; headings get
ids so ``page.html#alertname`` lands on the alert. Mermaid blocks become ``<pre
class="mermaid">``, drawn by mermaid.js from a pinned CDN URL; each page also carries the same
facts as tables, so it reads without JavaScript.

A rebuild writes only what changed and removes files a previous build left that this one did
not write: the trees stay identical for identical facts. Only directories marked as the docs'
own (an empty :data:`MARKER` file in ``markdown/`` and ``site/``, written by every build) are
cleaned; a non-empty ``markdown/`` or ``site/`` without it is refused (:class:`OutDirError`), so
``--out`` pointed at someone's files deletes none of them.

>>> page = to_html("# Hi\\n\\nSee [cdc](pipelines/cdc.md#lag).", "Hi", "index.md")
>>> print(page)  # doctest: +ELLIPSIS
<!DOCTYPE html>
...<h1 id="hi">Hi</h1>
<p>See <a href="pipelines/cdc.html#lag">cdc</a>.</p>
...
"""

from __future__ import annotations

import html
import posixpath
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from shopstream.genai.docs.pages import INDEX, Page

MARKDOWN_DIR = "markdown"
SITE_DIR = "site"
STYLESHEET = "style.css"
#: Marks markdown/ and site/ as written by the docs build: only those are cleaned.
MARKER = ".shopstream-docs"
#: mermaid.js, pinned: the same diagrams on every build.
MERMAID_URL = "https://cdn.jsdelivr.net/npm/mermaid@11.4.1/dist/mermaid.esm.min.mjs"

CSS = """\
body { font-family: system-ui, sans-serif; line-height: 1.5; margin: 0; color: #1d2330; }
header { background: #1d2330; padding: 0.6rem 1.5rem; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
h1 { border-bottom: 2px solid #d8dde6; padding-bottom: 0.3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #e6e9ef; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d8dde6; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f9; }
code { background: #f3f5f9; padding: 0.05rem 0.25rem; border-radius: 3px; }
pre { background: #f3f5f9; padding: 0.8rem; overflow-x: auto; }
pre.mermaid { background: #fff; border: 1px solid #e6e9ef; }
"""


def _slug(text: str) -> str:
    """
    >>> _slug("Alerts and runbooks"), _slug("DataQualityCheckFailing")
    ('alerts-and-runbooks', 'dataqualitycheckfailing')
    """
    return re.sub(r"[^\w-]", "", "-".join(text.lower().split()))


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    renderer: Any = md.renderer  # markdown-it's RendererHTML (the protocol type lacks its rules)
    default_fence = renderer.rules["fence"]

    def fence(_self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        if token.info.strip() == "mermaid":
            return f'<pre class="mermaid">{html.escape(token.content)}</pre>\n'
        return str(default_fence(tokens, idx, options, env))

    def link_open(_self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        href = str(token.attrGet("href") or "")
        if "://" not in href and not href.startswith(("#", "mailto:")):
            target, hash_, anchor = href.partition("#")
            if target.endswith(".md"):
                token.attrSet("href", target[: -len(".md")] + ".html" + hash_ + anchor)
        return str(renderer.renderToken(tokens, idx, options, env))

    def heading_open(_self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        inline = tokens[idx + 1]
        slug = _slug(inline.content)
        seen = env.setdefault("slugs", {})
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        tokens[idx].attrSet("id", slug if count == 0 else f"{slug}-{count}")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("fence", fence)
    md.add_render_rule("link_open", link_open)
    md.add_render_rule("heading_open", heading_open)
    return md


_MD = _renderer()


def to_html(markdown: str, title: str, path: str) -> str:
    """One page as a whole HTML document (``path``: the page's Markdown path, for the relative
    links to the index and the stylesheet)."""
    base = posixpath.relpath(".", posixpath.dirname(path) or ".")
    prefix = "" if base == "." else base + "/"
    body = _MD.render(markdown, {})
    mermaid = ""
    if '<pre class="mermaid">' in body:
        mermaid = (
            f'<script type="module">import mermaid from "{MERMAID_URL}";\n'
            'mermaid.initialize({ startOnLoad: true, securityLevel: "strict" });</script>\n'
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<link rel="stylesheet" href="{prefix}{STYLESHEET}">\n{mermaid}</head>\n<body>\n'
        f'<header><a href="{prefix}index.html">shopstream documentation</a></header>\n'
        f"<main>\n{body}</main>\n</body>\n</html>\n"
    )


class OutDirError(ValueError):
    """The output directory is not one the docs may write (and clean)."""


def check_out_dir(out_dir: Path) -> None:
    """Raise :class:`OutDirError` when ``out_dir`` is a file, or its ``markdown/`` or ``site/``
    holds files an earlier docs build did not mark as its own."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutDirError(f"{out_dir} is not a directory: give --out a directory")
    for root in (out_dir / MARKDOWN_DIR, out_dir / SITE_DIR):
        if root.exists() and not root.is_dir():
            raise OutDirError(f"{root} is not a directory: move it or choose another --out")
        if root.is_dir() and not (root / MARKER).is_file() and any(root.iterdir()):
            raise OutDirError(
                f"{root} is not empty and was not written by `shopstream docs build` (no "
                f"{MARKER} in it): its files would be deleted as stale; choose another --out "
                "or empty it"
            )


def write_site(pages: Sequence[Page], out_dir: Path) -> list[Path]:
    """Write every page as Markdown and HTML, plus the stylesheet; remove what an earlier build
    left and this one did not write. Returns the files of the build, sorted (the markers are
    not among them). Raises :class:`OutDirError` (see :func:`check_out_dir`)."""
    if not any(p.path == INDEX for p in pages):
        raise ValueError("the pages have no index.md")
    check_out_dir(out_dir)
    roots = [out_dir / MARKDOWN_DIR, out_dir / SITE_DIR]
    for root in roots:
        _write_if_changed(root / MARKER, "")
    files: dict[Path, str] = {out_dir / SITE_DIR / STYLESHEET: CSS}
    for page in pages:
        markdown = without_tags(page.markdown)
        files[out_dir / MARKDOWN_DIR / page.path] = markdown
        html_path = page.path[: -len(".md")] + ".html"
        files[out_dir / SITE_DIR / html_path] = to_html(markdown, page.title, page.path)
    for path, text in files.items():
        _write_if_changed(path, text)
    _remove_stale(roots, set(files) | {root / MARKER for root in roots})
    return sorted(files)


_CODE_SPAN = re.compile(r"(`+).*?\1")


def without_tags(markdown: str) -> str:
    r"""``<`` in prose as ``&lt;``: Markdown viewers take ``raw.cdc_<table>`` for an HTML tag and
    hide it. Code spans and fenced blocks (Mermaid) keep theirs.

    >>> without_tags("writes raw.cdc_<table> (`raw.cdc_<table>`)\n```\na --> b<br>\n```")
    'writes raw.cdc_&lt;table> (`raw.cdc_<table>`)\n```\na --> b<br>\n```'
    """
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            parts, last = [], 0
            for span in _CODE_SPAN.finditer(line):
                parts += [line[last : span.start()].replace("<", "&lt;"), span.group(0)]
                last = span.end()
            line = "".join([*parts, line[last:].replace("<", "&lt;")])
        lines.append(line)
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _remove_stale(roots: Iterable[Path], keep: set[Path]) -> None:
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):  # children before their directory
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path not in keep:
                path.unlink()


__all__ = [
    "CSS",
    "MARKDOWN_DIR",
    "MARKER",
    "MERMAID_URL",
    "SITE_DIR",
    "STYLESHEET",
    "OutDirError",
    "check_out_dir",
    "to_html",
    "write_site",
]
