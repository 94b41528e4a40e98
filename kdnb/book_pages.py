"""What a run of the book leaves beside each executed chapter, and the pages generated from it.

Beside ``_build/executed/<part>/<chapter>.ipynb`` the runner writes (:func:`record_run`):

- ``<chapter>.run.json``: profile, parameters, when, how long, on what device, with which torch;
- ``<chapter>.claims.json``: the chapter's claims, read from its executed notebook.

A chapter never writes files itself: its ledger cell (:func:`kdnb.analysis.ledger`) shows the claims table and
carries the same claims as data in that output, so the executed notebook holds them however it was run
(``kdnb run``, plain papermill, JupyterLab). The runner copies them out; :func:`gather` reads the copy, or the
notebook itself where no up-to-date copy exists.

From these, :func:`stage` adds to the site's staged source: the "What reproduced" page (every claim of every
chapter, each row linking back to its chapter's ledger), the landing page's "numbers on this site" section
(profile, device, torch version, wall time per chapter), the hidden papermill parameters cell, and a style
sheet that wraps code instead of scrolling it. ``python -m kdnb claims`` prints the same table
(:func:`print_claims`).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import book_layout
from .analysis.claims import VERDICTS, Claim, claims_from_payload, \
    claims_in_notebook, claims_payload

CLAIMS_PAGE = "book/reproduced"  # the generated page, as listed in _toc.yml
INDEX_MARKER = "% kdnb: the numbers on this site"  # where the landing page gets its build section
LABEL_PREFIX = "kdnb-claims-"
SITE_CSS = """\
/* kdnb: code wraps inside the text column instead of scrolling sideways. */
div.highlight pre {
  white-space: pre-wrap;
  overflow-wrap: anywhere;
}
/* The "What reproduced" table: seven columns in the text column, at the widths it asks for. */
table.kdnb-claims {
  table-layout: fixed;
  width: 100%;
  font-size: 0.8em;
}
table.kdnb-claims td, table.kdnb-claims th {
  overflow-wrap: break-word;
  padding: 0.3em 0.4em;
}
"""


# ----------------------------------------------------------------------------------------- run records

def run_path(notebook: Path) -> Path:
    return Path(notebook).with_suffix(".run.json")


def claims_path(notebook: Path) -> Path:
    return Path(notebook).with_suffix(".claims.json")


def _write_json(path: Path, data) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """What the chapters ran on: device, its name, CPU cores, torch, Python, kdnb.

    The kernels papermill starts inherit this process's environment and interpreter, so they see the same
    device (``kdnb.device()``: CUDA when present, ``KDNB_DEVICE`` overriding).
    """
    import torch

    from . import __version__, device

    chosen = device()
    if chosen.type == "cuda":
        name = torch.cuda.get_device_name(chosen)
    else:
        name = _cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"device": str(chosen), "device_name": name, "cpu_cores": cores, "torch": torch.__version__,
            "python": platform.python_version(), "kdnb": __version__, "platform": platform.platform(terse=True)}


def _read_notebook(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _notebook_failed(notebook: dict) -> bool:
    if notebook.get("metadata", {}).get("papermill", {}).get("exception"):
        return True
    return any(o.get("output_type") == "error" for c in notebook.get("cells", []) for o in c.get("outputs", []))


def _profile_of(parameters: dict) -> str:
    from . import profiles

    try:
        return profiles.get(parameters.get("PROFILE")).name
    except ValueError:
        return str(parameters.get("PROFILE"))


def record_run(chapter: Path, notebook: Path, seconds: float) -> None:
    """Write ``<chapter>.run.json`` and ``<chapter>.claims.json`` beside an executed notebook.

    Called by the runner after every execution, failed ones included; never raises (a warning instead), so
    bookkeeping cannot hide the chapter's own outcome.
    """
    try:
        _record_run(Path(chapter), Path(notebook), seconds)
    except Exception as error:  # noqa: BLE001 - bookkeeping must not mask the run's result
        warnings.warn(f"kdnb: could not record the run of {chapter}: {type(error).__name__}: {error}",
                      stacklevel=2)


def _record_run(chapter: Path, notebook_path: Path, seconds: float) -> None:
    notebook_path.parent.mkdir(parents=True, exist_ok=True)
    notebook = _read_notebook(notebook_path)
    parameters = (notebook or {}).get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}
    finished = dt.datetime.now(dt.timezone.utc)
    chapter_name = chapter.resolve().relative_to(book_layout.ROOT).as_posix() \
        if chapter.resolve().is_relative_to(book_layout.ROOT) else chapter.name
    run = {"chapter": chapter_name, "title": chapter_title(chapter), "notebook": notebook_path.name,
           "profile": _profile_of(parameters), "parameters": parameters,
           "started": (finished - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds"),
           "finished": finished.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
           "ok": notebook is not None and not _notebook_failed(notebook), **environment()}
    _write_json(run_path(notebook_path), run)
    claims = [c for _, c in claims_in_notebook(notebook)] if notebook is not None else []
    _write_json(claims_path(notebook_path), {**claims_payload(claims), "chapter": chapter_name,
                                              "title": run["title"], "profile": run["profile"], "ok": run["ok"]})


# ------------------------------------------------------------------------------------------- gathering

def chapter_title(chapter: Path) -> str:
    """The first ``# `` heading of a MyST page, outside code fences (else the file name)."""
    fence = None
    try:
        lines = Path(chapter).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        opening = re.match(r"^(`{3,}|:{3,})", line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and line.startswith("# "):
            return line[2:].strip()
    return Path(chapter).stem


def chapter_label(chapter: Path) -> str:
    """The MyST label the site puts on the section holding a chapter's ledger."""
    chapter = Path(chapter).resolve()
    name = chapter.relative_to(book_layout.ROOT).with_suffix("").as_posix() \
        if chapter.is_relative_to(book_layout.ROOT) else chapter.stem
    return LABEL_PREFIX + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class ChapterRecord:
    """One executed chapter: its claims and how it was run."""

    chapter: Path  # the source page, book/....md
    title: str
    notebook: Path  # the executed notebook
    claims: list[Claim] = field(default_factory=list)
    run: dict = field(default_factory=dict)  # <chapter>.run.json ({} if the runner did not record it)

    @property
    def docname(self) -> str:
        return self.chapter.resolve().relative_to(book_layout.ROOT).with_suffix("").as_posix()

    @property
    def profile(self) -> str:
        return self.run.get("profile", "?")


def _fresh(derived: Path, source: Path) -> bool:
    """Whether ``derived`` exists and was written after ``source`` (or at the same time)."""
    return derived.exists() and derived.stat().st_mtime >= source.stat().st_mtime - 1e-3


def read_record(chapter: Path, notebook_path: Path) -> ChapterRecord:
    """The record of one executed chapter: the runner's JSON files when they are current, else the
    notebook itself (run by hand with papermill, say)."""
    record = ChapterRecord(Path(chapter), chapter_title(chapter), Path(notebook_path))
    notebook = None
    if _fresh(claims_path(notebook_path), notebook_path):
        record.claims = claims_from_payload(claims_path(notebook_path).read_text(encoding="utf-8"))
    else:
        notebook = _read_notebook(notebook_path)
        record.claims = [c for _, c in claims_in_notebook(notebook)] if notebook else []
    if _fresh(run_path(notebook_path), notebook_path):
        record.run = json.loads(run_path(notebook_path).read_text(encoding="utf-8"))
    else:
        notebook = notebook if notebook is not None else _read_notebook(notebook_path)
        parameters = (notebook or {}).get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}
        record.run = {"profile": _profile_of(parameters), "parameters": parameters,
                      "ok": notebook is not None and not _notebook_failed(notebook)}
    return record


def gather() -> tuple[list[ChapterRecord], list[Path]]:
    """Every executed chapter of ``_toc.yml`` in reading order, and the chapters not executed yet."""
    records, missing = [], []
    for chapter in book_layout.chapters():
        executed = book_layout.executed_path(chapter)
        if executed.exists():
            records.append(read_record(chapter, executed))
        else:
            missing.append(chapter)
    return records, missing


# -------------------------------------------------------------------------------------------- the table

@functools.lru_cache(maxsize=4)
def _bibliography(path: str) -> dict[str, str]:
    """``{key: "Hinton et al. 2015"}`` from a BibTeX file (authors "Last, First and ..." or "First Last")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return {}
    found = {}
    for match in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,(.*?)\n\}", text, re.DOTALL):
        key, body = match.groups()
        author = re.search(r"\bauthor\s*=\s*[{\"](.*?)[}\"]\s*,?\s*$", body, re.MULTILINE | re.IGNORECASE)
        year = re.search(r"\byear\s*=\s*[{\"]?(\d{4})", body, re.IGNORECASE)
        names = [a.strip() for a in re.split(r"\s+and\s+", author.group(1))] if author else []
        last = [n.split(",")[0].strip() if "," in n else n.split()[-1] for n in names if n]
        who = (last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2
               else f"{last[0]} et al." if last else key)
        found[key] = f"{who} {year.group(1)}" if year else who
    return found


def paper_name(source: str) -> str:
    """The citation keys of a claim, as "Hinton et al. 2015" (keys not in references.bib stay as they are)."""
    names = _bibliography(str(book_layout.BOOK / "references.bib"))
    keys = [k.strip() for k in source.split(",") if k.strip()]
    return "; ".join(names.get(k, k) for k in keys) or "—"


COLUMNS = ("Chapter", "Paper", "Claim", "The paper reports", "Paper effect", "We measured", "Premise", "n",
           "Resolution", "Verdict", "Note", "Profile")


def claim_rows(records: list[ChapterRecord]) -> list[dict[str, str]]:
    """One row per claim, in reading order: the columns of :data:`COLUMNS` plus ``label`` and ``source``."""
    rows = []
    for record in records:
        for claim in record.claims:
            rows.append({"Chapter": record.title, "Paper": paper_name(claim.source), "Claim": claim.claim,
                         "The paper reports": claim.paper, "Paper effect": claim.paper_effect or "—",
                         "We measured": claim.measured, "Premise": claim.premise_text,
                         "n": "—" if claim.n is None else str(claim.n), "Resolution": claim.resolution or "—",
                         "Verdict": claim.verdict, "Note": claim.note, "Profile": record.profile,
                         "label": chapter_label(record.chapter), "docname": record.docname,
                         "source": claim.source, "premise_held": claim.premise_held, "setting": claim.setting})
    return rows


def verdict_counts(rows: list[dict[str, str]]) -> str:
    n = len(rows)
    counts = {v: sum(r["Verdict"] == v for r in rows) for v in VERDICTS}
    return (f"{n} claim{'s' if n != 1 else ''}: " + ", ".join(f"{counts[v]} {v}" for v in counts))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: The details of a claim below its headline, in the terminal and in the page's drop-down, in this order.
DETAILS = ("The paper reports", "Paper effect", "We measured", "Resolution", "Premise", "Note")


def format_text(rows: list[dict[str, str]], width: int | None = None) -> str:
    """The claims for a terminal of ``width`` columns (the terminal's by default): per claim a headline —
    verdict, chapter, paper, claim — and its details indented below it, wrapped to the width."""
    width = max(60, width or shutil.get_terminal_size((140, 24)).columns)
    out: list[str] = []
    for row in rows:
        head = f"[{row['Verdict']}] {row['Chapter']} · {row['Paper']} · n={row['n']} · {row['Profile']}"
        out += textwrap.wrap(_one_line(head), width, break_on_hyphens=False)
        out += textwrap.wrap(_one_line(row["Claim"]), width, initial_indent="  ", subsequent_indent="  ",
                             break_on_hyphens=False)
        for name in DETAILS:
            if row[name] and row[name] != "—":
                out += textwrap.wrap(_one_line(row[name]), width, initial_indent=f"    {name}: ",
                                     subsequent_indent="      ", break_on_hyphens=False)
        out.append("")
    return "\n".join(out).rstrip("\n")


def format_markdown(rows: list[dict[str, str]]) -> str:
    """The claims as a Markdown pipe table (plain text, one line per claim)."""
    def cell(text: str) -> str:
        return _one_line(text).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def device_text(run: dict) -> str:
    """``"CPU (AMD EPYC 7B13, 2 cores)"`` or ``"CUDA (NVIDIA H200)"``."""
    if "device" not in run:
        return "?"
    kind = run["device"].split(":")[0].upper()
    if kind == "CPU":
        return f"CPU ({run.get('device_name', '?')}, {run.get('cpu_cores', '?')} cores)"
    return f"{kind} ({run.get('device_name', '?')})"


def _where_and_when(records: list[ChapterRecord]) -> str:
    """``"computed on CPU (…) with torch 2.14.1, finished 2026-01-01 12:00 UTC"`` for a set of chapters."""
    devices = sorted({device_text(r.run) for r in records})
    torches = sorted({r.run.get("torch", "?") for r in records})
    finished = sorted(r.run["finished"] for r in records if r.run.get("finished"))
    when = f", finished {_when(finished[-1])}" if finished else ""
    return f"computed on {', '.join(devices)} with torch {', '.join(torches)}{when}"


def run_summary(records: list[ChapterRecord]) -> str:
    """At which profile(s), on what and when the chapters ran."""
    return f"profile {', '.join(sorted({r.profile for r in records}))}, {_where_and_when(records)}"


def print_claims(fmt: str = "text", stream=None) -> int:
    """``python -m kdnb claims``: every executed chapter's claims; 1 (and a hint) when nothing ran yet."""
    stream = stream or sys.stdout
    records, missing = gather()
    where = book_layout.EXECUTED
    try:
        where = where.relative_to(book_layout.ROOT)
    except ValueError:
        pass
    if not records:
        print(f"kdnb claims: no chapter has been executed yet ({where}/ holds no executed notebook).\n"
              "Run the chapters first: `python -m kdnb run --profile smoke` (a quick look, about a minute)\n"
              "or `make book` (the site's numbers).", file=sys.stderr)
        return 1
    rows = claim_rows(records)
    if fmt == "json":
        json.dump([{"chapter": r.docname, "title": r.title, "run": r.run,
                    "claims": [{**c.to_dict(), "paper_name": paper_name(c.source)} for c in r.claims]}
                   for r in records], stream, indent=2, ensure_ascii=False)
        print(file=stream)
        return 0
    print(f"Claims of {len(records)} executed chapter(s) in {where}/: {run_summary(records)}.", file=stream)
    print(format_markdown(rows) if fmt == "markdown" else format_text(rows), file=stream)
    print(verdict_counts(rows) + ".", file=stream)
    for record in records:
        if not record.run.get("ok", True):
            print(f"note: {record.docname} did not run to the end; its claims may be incomplete.", file=stream)
        elif not record.claims:
            print(f"note: {record.docname} recorded no claims.", file=stream)
    for chapter in missing:
        print(f"note: {chapter.relative_to(book_layout.ROOT)} has not been executed yet.", file=stream)
    return 0


# ------------------------------------------------------------------------------------- generated pages

def _myst_cell(text: str) -> str:
    """Claim text as the content of a list-table cell: one line, not mistaken for a list item."""
    text = _one_line(text) or "—"
    return "\\" + text if re.match(r"^([-*+]|\d+[.)])(\s|$)", text) else text


def _dropdown_body(row: dict) -> list[str]:
    """The details of one claim as a definition list (plain text: no roles, so no claim text can break it)."""
    lines = []
    for name in DETAILS + ("Our setting",):
        value = row.get("setting") if name == "Our setting" else row[name]
        if value and value != "—":
            lines += [name, f": {_one_line(value)}", ""]
    return lines


def claims_page(records: list[ChapterRecord], missing: list[Path]) -> str:
    """The "What reproduced" page: one compact row per claim — the claim with its chapter and paper, the verdict
    with its premise and n, and the numbers a click away — each linking back to its chapter's ledger."""
    rows = claim_rows(records)
    lines = ["# What reproduced", "",
             "Every chapter ends with *What the paper claims, what we measured*. This page gathers those "
             "ledgers into one table. A verdict is computed from this build's numbers: *reproduced* when the "
             "whole 95% confidence interval of our measurement supports the claim, *not reproduced* when it "
             "contradicts it, *inconclusive at this scale* otherwise (and whenever fewer than three seeds "
             "were run), and *premise unmet* when what the paper's mechanism needs did not hold in our run (a "
             "teacher stronger than its student, a cross-entropy run that over-fits, networks that learned): "
             "such a run did not test the paper, so it says nothing for or against it. Rules over several "
             "comparisons correct for their number (Holm). Beside each verdict: its premise, the number of seeds "
             "n, and under *numbers* the paper's effect, ours, and the design's *resolution*, the smallest "
             "difference those n seeds could tell from zero. A paper effect below the resolution could not have "
             "been seen; the note says what scale would settle it. Each chapter link leads to the ledger it "
             "comes from.", ""]
    if records:
        lines += [f"These numbers come from {run_summary(records)} (details on the {{doc}}`landing page "
                  f"<index>`). {verdict_counts(rows)}.", ""]
    if rows:
        lines += ["````{list-table}", ":header-rows: 1", ":class: kdnb-claims", ":widths: 44 18 38", ""]
        lines += ["* - Claim", "  - Verdict", "  - Numbers"]
        for row in rows:
            link = f"{{ref}}`{_one_line(row['Chapter'])} <{row['label']}>`"
            paper = ", ".join(f"{{cite:t}}`{k.strip()}`" for k in row["source"].split(",") if k.strip()) or "—"
            held = {None: "no premise stated", True: "premise held", False: "premise unmet"}[row["premise_held"]]
            lines += [f"* - {link} · {paper}", "", f"    {_myst_cell(row['Claim'])}",
                      f"  - **{row['Verdict']}**", "", f"    {held}; n = {row['n']}; {row['Profile']}",
                      "  - :::{dropdown} " + _one_line(f"ours: {row['We measured']}")[:60].replace(":", "") + "…",
                      "    :class-container: kdnb-claim-details", ""]
            lines += [f"    {line}" if line else "" for line in _dropdown_body(row)]
            lines += ["    :::"]
        lines += ["````", ""]
    else:
        lines += ["No chapter of this build recorded a claim yet.", ""]
    for record in records:
        if not record.claims:
            lines += [f"- {{doc}}`{record.title} </{record.docname}>` recorded no claims.", ""]
    for chapter in missing:
        lines += [f"- *{chapter_title(chapter)}* was not executed for this build.", ""]
    lines += ["In a terminal, `python -m kdnb claims` prints the same claims with their details after a run.", ""]
    return "\n".join(lines)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def build_section(records: list[ChapterRecord], index_folder: str = "book") -> str:
    """The landing page's section on where this site's numbers come from."""
    from . import profiles as profile_module

    if not records:
        return ""
    names = sorted({r.profile for r in records})
    described = "; ".join(f"**{n}**: {profile_module.PROFILES[n].description}" if n in profile_module.PROFILES
                          else f"**{n}**" for n in names)
    lines = ["## The numbers on this site", "",
             f"Every number, figure and verdict on these pages was computed when the chapters below were "
             f"executed, at profile {described}. {_sentence(_where_and_when(records))}.", ""]
    if "smoke" in names:
        lines += [":::{warning}",
                  "This build used the `smoke` profile, which checks that every code path runs, on tiny data "
                  "for one or two epochs. Its numbers say nothing about the papers; build with "
                  "`make book` (profile `book`) for those.", ":::", ""]
    lines += ["| chapter | profile | finished | device | torch | wall time |", "|---|---|---|---|---|---|"]
    for r in records:
        doc = os.path.relpath(r.docname, index_folder)
        status = "" if r.run.get("ok", True) else " (failed)"
        lines.append(f"| {{doc}}`{r.title} <{doc}>` | {r.profile} | {_when(r.run.get('finished'))} | "
                     f"{device_text(r.run)} | {r.run.get('torch', '?')} | "
                     f"{_duration(r.run.get('seconds'))}{status} |")
    lines += ["", f"Every claim and its verdict, from all chapters, on one page: {{doc}}`What reproduced "
                  f"<{os.path.relpath(CLAIMS_PAGE, index_folder)}>`.", ""]
    return "\n".join(lines)


_HEADING = re.compile(r"^#{1,6} ")


def _label_ledger_sections(notebook, label: str) -> bool:
    """Put ``(label)=`` on the heading of the section that holds the notebook's first ledger."""
    found = claims_in_notebook(notebook)
    if not found:
        return False
    first = min(index for index, _ in found)
    for cell in reversed(notebook.cells[:first]):
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.split("\n")
        headings = [i for i, line in enumerate(lines) if _HEADING.match(line)]
        if headings:
            lines.insert(headings[-1], f"({label})=")
            cell.source = "\n".join(lines)
            return True
    return False


def _hide_injected_parameters(notebook) -> None:
    """papermill's "# Parameters" cell repeats the run's overrides: the landing page states them instead."""
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]


def stage(source: Path) -> None:
    """Add the generated parts to the site's staged source folder (``kdnb.notebooks._stage_site_source``)."""
    import nbformat
    source = Path(source)
    records, missing = gather()
    labelled = set()
    for record in records:
        staged = source / record.chapter.resolve().relative_to(book_layout.ROOT).with_suffix(".ipynb")
        if not staged.exists():
            continue
        notebook = nbformat.read(staged, as_version=4)
        _hide_injected_parameters(notebook)
        if _label_ledger_sections(notebook, chapter_label(record.chapter)):
            labelled.add(record.docname)
        nbformat.write(notebook, staged)
    page = claims_page(records, missing)
    for record in records:
        if record.docname not in labelled:  # no heading above the ledger: link to the chapter's top
            page = page.replace(f"{{ref}}`{_one_line(record.title)} <{chapter_label(record.chapter)}>`",
                                f"{{doc}}`{_one_line(record.title)} </{record.docname}>`")
    (source / f"{CLAIMS_PAGE}.md").write_text(page, encoding="utf-8")
    root = yaml_root(source)
    index = source / f"{root}.md"
    if index.exists():
        text = index.read_text(encoding="utf-8")
        section = build_section(records, index_folder=str(Path(root).parent))
        text = text.replace(INDEX_MARKER, section, 1) if INDEX_MARKER in text else text.rstrip() + "\n\n" + section
        index.write_text(text, encoding="utf-8")
    static = source / "_static"
    static.mkdir(exist_ok=True)
    (static / "kdnb.css").write_text(SITE_CSS, encoding="utf-8")  # Jupyter Book links every _static/*.css


def yaml_root(source: Path) -> str:
    import yaml

    return yaml.safe_load((Path(source) / "_toc.yml").read_text())["root"]
