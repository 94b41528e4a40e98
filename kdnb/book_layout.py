"""Where the book lives: the repository root, the chapters in ``_toc.yml``'s order, where executed notebooks and
the site are written. The runner (:mod:`kdnb.notebooks`) and the generated pages (:mod:`kdnb.book_pages`) both read
these, at call time, so a test that points ``EXECUTED`` elsewhere moves both."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
# Where `kdnb run` writes the executed notebooks; KDNB_EXECUTED overrides it (a test runs the CLI into a tmp folder).
EXECUTED = Path(os.environ.get("KDNB_EXECUTED") or ROOT / "_build" / "executed").resolve()
SITE_SOURCE = ROOT / "_build" / "site-src"
SITE = ROOT / "_build" / "site"


def is_notebook(path: Path) -> bool:
    """A MyST-Markdown page is a notebook when its front matter names a jupytext format and a kernel."""
    head = path.read_text(encoding="utf-8")[:600]
    return head.startswith("---") and "format_name: myst" in head and "kernelspec:" in head


def toc_files() -> list[str]:
    """Every page of ``_toc.yml`` in reading order (the root first), as written there: no suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found: list[str] = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def chapters() -> list[Path]:
    """Every notebook page listed in ``_toc.yml``, in reading order."""
    pages = [ROOT / f"{name}.md" for name in toc_files()]
    return [p for p in pages if p.exists() and is_notebook(p)]


def resolve(names: list[str]) -> list[Path]:
    """Chapters matching ``names`` (a path, a file stem or a part of it); none means every chapter."""
    every = chapters()
    if not names:
        return every
    chosen = []
    for name in names:
        hits = [p for p in every if Path(name).resolve() == p or name in p.stem or name == str(p.relative_to(ROOT))]
        if not hits:
            raise SystemExit(f"no chapter matches {name!r}; chapters: {', '.join(p.stem for p in every)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def executed_path(chapter: Path) -> Path:
    chapter = Path(chapter).resolve()
    relative = chapter.relative_to(ROOT) if chapter.is_relative_to(ROOT) else Path(chapter.name)
    return EXECUTED / relative.with_suffix(".ipynb")
