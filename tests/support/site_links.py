"""The links and anchors of a static site's HTML pages, to prove every internal link resolves."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class PageLinks(HTMLParser):
    """One HTML page's ``href``s (a, link), element ids and Mermaid blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.mermaid = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("a", "link") and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "pre" and found.get("class") == "mermaid":
            self.mermaid += 1


def links_of(html: str) -> PageLinks:
    page = PageLinks()
    page.feed(html)
    page.close()
    return page


def broken_links(site: Path) -> list[tuple[str, str]]:
    """(page, href) of every internal link under ``site`` whose file, or anchor in it, is
    missing (links to other hosts are not followed)."""
    pages = {p.resolve(): links_of(p.read_text()) for p in sorted(site.rglob("*.html"))}
    broken = []
    for path, page in pages.items():
        for href in page.hrefs:
            target, _, anchor = href.partition("#")
            if "://" in href or not target:
                continue
            linked = (path.parent / target).resolve()
            if not linked.is_file() or (anchor and anchor not in pages[linked].ids):
                broken.append((path.relative_to(site.resolve()).as_posix(), href))
    return broken
