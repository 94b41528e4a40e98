"""The claims of every chapter: the ledger's data in the notebook, the runner's files beside it, the book's
"What reproduced" page, the landing page's build section and ``python -m kdnb claims``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat
import pytest
from bs4 import BeautifulSoup

from kdnb import book_layout, book_pages, notebooks
from kdnb.__main__ import main
from kdnb.analysis import (CLAIMS_MIME, INCONCLUSIVE, NOT_REPRODUCED, PREMISE_UNMET, REPRODUCED, VERDICTS, Claim,
                           claims_in_notebook, ledger)

ROOT = book_layout.ROOT
CHAPTER0 = ROOT / "book" / "part0" / "distillation.md"

KD = Claim("KD helps the student.", "+1.2 points (CIFAR-100)", "+0.30 ± 0.20 (n=3)", REPRODUCED,
           "fashion_mnist, 3 seeds", source="hinton2015distilling")
T4 = Claim("T=4 is best.", "Table 2", "T=2 best", NOT_REPRODUCED, source="huang2021revisiting, nokey")
AT = Claim("- AT helps | sometimes", "1. in Table 3", "$-0.1$", INCONCLUSIVE)
DKPP = Claim("DKPP helps.", "+1.12 points", "-3.83 ± 1.38 (n=5)", PREMISE_UNMET, premise="teacher ≥ CE student + 3 "
             "points: 70.00 vs 76.00 (-6.00)", premise_held=False, n=5, resolution="±1.71 points at n=5",
             paper_effect="+1.12 points", note="A teacher trained on 10× the data.")


# ------------------------------------------------------------------------------------------------- units

def ledger_notebook(*groups: list[Claim], headings: bool = True):
    """A hand-made executed notebook: per group a section heading and a ledger cell with its output."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("PROFILE = None", metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell('# Parameters\nPROFILE = "smoke"\n',
                                              metadata={"tags": ["injected-parameters"]}))
    for i, claims in enumerate(groups):
        nb.cells.append(nbformat.v4.new_markdown_cell(f"Some text.\n\n## Ledger {i}\n" if headings else "Text."))
        bundle = ledger(claims)._repr_mimebundle_()
        nb.cells.append(nbformat.v4.new_code_cell("analysis.ledger(claims)", outputs=[
            nbformat.v4.new_output("execute_result", data=bundle, execution_count=1)]))
    return nb


def test_claim_round_trip_and_payload():
    assert Claim.from_dict(KD.to_dict()) == KD
    assert Claim.from_dict({**T4.to_dict(), "added_later": 1}) == T4  # a later format's extra keys are ignored
    bundle = ledger([KD, T4])._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain", CLAIMS_MIME}
    assert "KD helps the student." in bundle["text/html"] and "<th " not in bundle["text/html"].split("<tbody>")[1]
    assert bundle[CLAIMS_MIME] == {"format": 2, "claims": [KD.to_dict(), T4.to_dict()]}
    assert Claim.from_dict(json.loads(json.dumps(DKPP.to_dict()))) == DKPP  # typed fields survive JSON
    # A format-1 payload (strings only, no premise) still reads.
    assert Claim.from_dict({"claim": "c", "paper": "p", "measured": "m", "verdict": REPRODUCED}).premise_held is None
    json.dumps(bundle[CLAIMS_MIME])  # plain JSON
    with pytest.raises(TypeError):
        ledger([KD.to_dict()])


def test_claims_read_back_from_a_notebook():
    nb = ledger_notebook([KD, T4], [AT, KD])
    found = claims_in_notebook(nb)
    assert [c for _, c in found] == [KD, T4, AT]  # shown twice, counted once
    assert [i for i, _ in found] == [3, 3, 5]
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # as stored on disk
    assert [c for _, c in claims_in_notebook(nb)] == [KD, T4, AT]
    # The payload as a JSON string (another writer) reads the same.
    nb.cells[3].outputs[0].data[CLAIMS_MIME] = json.dumps(nb.cells[3].outputs[0].data[CLAIMS_MIME])
    assert [c for _, c in claims_in_notebook(nb)] == [KD, T4, AT]


def records() -> list[book_pages.ChapterRecord]:
    run = {"profile": "book", "finished": "2026-01-02T03:04:05+00:00", "seconds": 312.4, "ok": True,
           "device": "cpu", "device_name": "Some CPU", "cpu_cores": 2, "torch": "2.14.1"}
    return [book_pages.ChapterRecord(CHAPTER0, "Distillation in one notebook", Path("x.ipynb"), [KD, T4, DKPP], run),
            book_pages.ChapterRecord(ROOT / "book" / "part9" / "later.md", "Later", Path("y.ipynb"), [AT],
                                     {**run, "profile": "smoke", "ok": False, "seconds": 4000})]


def test_rows_from_hand_made_claims():
    rows = book_pages.claim_rows(records())
    assert [r["Claim"] for r in rows] == [KD.claim, T4.claim, DKPP.claim, AT.claim]
    assert rows[0]["Paper"] == "Hinton et al. 2015"
    assert rows[1]["Paper"] == "Huang et al. 2021; nokey"  # a key missing from references.bib stays as it is
    assert rows[3]["Paper"] == "—"
    assert [r["Profile"] for r in rows] == ["book", "book", "book", "smoke"]
    assert rows[0]["label"] == "kdnb-claims-book-part0-distillation"
    assert rows[0]["The paper reports"] == KD.paper and rows[0]["We measured"] == KD.measured
    assert rows[2]["Premise"].endswith("— unmet") and rows[2]["n"] == "5" and rows[0]["n"] == "—"
    assert book_pages.verdict_counts(rows) == ("4 claims: 1 reproduced, 1 not reproduced, 1 inconclusive at this "
                                               "scale, 1 premise unmet")

    text = book_pages.format_text(rows, width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(map(len, lines))
    assert lines[0].startswith("[reproduced] Distillation in one notebook · Hinton et al. 2015")
    assert "[premise unmet]" in text and "Premise: teacher ≥ CE student + 3 points" in " ".join(text.split())
    assert "Resolution: ±1.71 points at n=5" in text and "T=4 is best." in text
    markdown = book_pages.format_markdown(rows).splitlines()
    assert len(markdown) == 2 + len(rows)
    assert "- AT helps \\| sometimes" in markdown[-1]


def test_pages_from_hand_made_claims():
    page = book_pages.claims_page(records(), missing=[ROOT / "book" / "part1" / "concepts.md"])
    assert page.startswith("# What reproduced\n")
    assert "{ref}`Distillation in one notebook <kdnb-claims-book-part0-distillation>`" in page
    assert "{cite:t}`huang2021revisiting`, {cite:t}`nokey`" in page
    assert "    \\- AT helps | sometimes" in page  # not a list item
    assert ": 1. in Table 3" in page  # details are a definition list
    assert "**not reproduced**" in page and "**premise unmet**" in page and "profile book, smoke" in page
    assert "premise unmet; n = 5; book" in page and "no premise stated; n = —" in page
    assert page.count(":::{dropdown}") == 4 and ": ±1.71 points at n=5" in page
    assert "was not executed for this build" in page

    section = book_pages.build_section(records())
    assert section.startswith("## The numbers on this site")
    assert "{doc}`Distillation in one notebook <part0/distillation>`" in section
    assert "| 5 min 12 s |" in section and "| 1 h 06 min (failed) |" in section
    assert "CPU (Some CPU, 2 cores)" in section and "2026-01-02 03:04 UTC" in section
    assert ":::{warning}" in section  # a smoke-profile chapter is flagged
    assert "{doc}`What reproduced <reproduced>`" in section
    assert book_pages.build_section([]) == ""


def test_staging_labels_the_ledger_section_and_hides_injected_parameters():
    nb = ledger_notebook([KD], [T4])
    assert book_pages._label_ledger_sections(nb, "kdnb-claims-x")
    assert nb.cells[2].source == "Some text.\n\n(kdnb-claims-x)=\n## Ledger 0\n"
    assert "kdnb-claims" not in nb.cells[4].source
    assert not book_pages._label_ledger_sections(ledger_notebook([KD], headings=False), "kdnb-claims-x")
    book_pages._hide_injected_parameters(nb)
    assert nb.cells[1].metadata.tags == ["injected-parameters", "remove-cell"]
    assert nb.cells[0].metadata.tags == ["parameters"]


def test_record_run_writes_both_files(tmp_path):
    nb = ledger_notebook([KD, T4])
    nb.metadata["papermill"] = {"parameters": {"PROFILE": "smoke", "SEED": 1}, "exception": None}
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    book_pages.record_run(CHAPTER0, path, 12.34)
    run = json.loads((tmp_path / "chapter.run.json").read_text())
    assert run["profile"] == "smoke" and run["parameters"] == {"PROFILE": "smoke", "SEED": 1}
    assert run["ok"] is True and run["seconds"] == 12.3 and run["chapter"] == "book/part0/distillation.md"
    assert run["title"] == "Distillation in one notebook"
    for key in ("device", "device_name", "torch", "python", "started", "finished"):
        assert run[key], key
    saved = json.loads((tmp_path / "chapter.claims.json").read_text())
    assert [Claim.from_dict(c) for c in saved["claims"]] == [KD, T4] and saved["profile"] == "smoke"

    record = book_pages.read_record(CHAPTER0, path)
    assert record.claims == [KD, T4] and record.profile == "smoke"

    # Re-executed by hand (no runner): the notebook is newer than the files, and wins.
    nb.cells[3].outputs[0].data = ledger([AT])._repr_mimebundle_()
    nb.metadata["papermill"]["parameters"] = {"PROFILE": "book"}
    nbformat.write(nb, path)
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    record = book_pages.read_record(CHAPTER0, path)
    assert record.claims == [AT] and record.profile == "book" and "device" not in record.run

    # A failed run is recorded as such, and its notebook's claims (none here) replace the old ones.
    nb.cells[3].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    nbformat.write(nb, path)
    book_pages.record_run(CHAPTER0, path, 1.0)
    assert json.loads((tmp_path / "chapter.run.json").read_text())["ok"] is False
    assert json.loads((tmp_path / "chapter.claims.json").read_text())["claims"] == []
    book_pages.record_run(CHAPTER0, tmp_path / "missing.ipynb", 1.0)  # no notebook at all: recorded, no raise
    assert json.loads((tmp_path / "missing.run.json").read_text())["ok"] is False


def test_claims_command_before_any_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(book_layout, "EXECUTED", tmp_path / "executed")
    assert main(["claims"]) == 1
    err = capsys.readouterr().err
    assert "no chapter has been executed yet" in err and "python -m kdnb run --profile smoke" in err


# ---------------------------------------------------------------------------- Chapter 0, smoke profile

def chapter0_outcome(smoke_book):
    outcome = smoke_book[CHAPTER0]
    if outcome.error is not None:
        pytest.fail(f"the smoke run of Chapter 0 failed (see test_notebooks):\n{outcome.error[:2000]}",
                    pytrace=False)
    return book_layout.executed_path(CHAPTER0)


def test_smoke_run_saves_claims_and_run_info(smoke_book):
    executed = chapter0_outcome(smoke_book)
    saved = json.loads(book_pages.claims_path(executed).read_text(encoding="utf-8"))
    claims = [Claim.from_dict(c) for c in saved["claims"]]
    assert claims, "Chapter 0's ledger recorded no claim"
    assert all(c.verdict in VERDICTS for c in claims)
    assert claims[0].verdict == INCONCLUSIVE  # two seeds at the smoke profile: inconclusive by construction
    assert saved["profile"] == "smoke" and saved["ok"] is True
    assert claims == [c for _, c in claims_in_notebook(nbformat.read(executed, as_version=4))]
    run = json.loads(book_pages.run_path(executed).read_text(encoding="utf-8"))
    assert run["profile"] == "smoke" and run["ok"] is True and run["seconds"] > 0
    assert run["torch"] and (run["device"] == "cpu" or run["device"].startswith("cuda")), run


def test_claims_command_prints_the_saved_rows(smoke_book, capsys):
    executed = chapter0_outcome(smoke_book)
    saved = [Claim.from_dict(c) for c in json.loads(book_pages.claims_path(executed).read_text())["claims"]]
    assert main(["claims", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    chapter = next(c for c in printed if c["chapter"] == "book/part0/distillation")
    assert [Claim.from_dict(c) for c in chapter["claims"]] == saved
    assert chapter["run"]["profile"] == "smoke"

    assert main(["claims", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    for claim in saved:
        row = next(line for line in out.splitlines() if line.startswith("| Distillation in one notebook |"))
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[2] == claim.claim and cells[3] == claim.paper and cells[5] == claim.measured
        assert cells[-3] == claim.verdict and cells[-1] == "smoke"


def test_claims_command_line(smoke_book):
    """The real command, in a fresh process, pointed at this session's executed notebooks."""
    executed = chapter0_outcome(smoke_book)
    saved = [Claim.from_dict(c) for c in json.loads(book_pages.claims_path(executed).read_text())["claims"]]
    env = {**os.environ, "KDNB_EXECUTED": str(book_layout.EXECUTED), "COLUMNS": "160"}
    result = subprocess.run([sys.executable, "-m", "kdnb", "claims"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "profile smoke" in lines[0]
    # Each claim is a headline "[verdict] chapter · paper · n=… · profile", its text, and its details indented.
    assert len(saved) == 1, "rebuild per row when Chapter 0 has several claims"
    head = next(i for i, line in enumerate(lines) if line.startswith("[") and "Distillation in one notebook" in line)
    assert lines[head].startswith(f"[{saved[0].verdict}] Distillation in one notebook · ")
    assert lines[head].endswith(f"· n={saved[0].n} · smoke")
    body = []
    for line in lines[head + 1:]:
        if not line.startswith("  ") or line.startswith("    "):
            break
        body.append(line.strip())
    assert " ".join(body) == " ".join(saved[0].claim.split())
    total = sum(len(json.loads(book_pages.claims_path(book_layout.executed_path(c)).read_text())["claims"])
                for c in book_layout.chapters())
    assert lines[-1].startswith(f"{total} claim{'s' if total != 1 else ''}: ")


# ------------------------------------------------------------------------------------------------- site

@pytest.fixture(scope="module")
def site_html(smoke_book, smoke_site) -> Path:
    """The smoke site of this session (built once, shared with the site tests)."""
    chapter0_outcome(smoke_book)
    return smoke_site


@pytest.mark.site
@pytest.mark.timeout(1800)
def test_claims_page_links_back_to_the_ledger(site_html: Path, smoke_book):
    executed = book_layout.executed_path(CHAPTER0)
    saved = [Claim.from_dict(c) for c in json.loads(book_pages.claims_path(executed).read_text())["claims"]]
    page = site_html / f"{book_pages.CLAIMS_PAGE}.html"
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    table = soup.select_one("table.kdnb-claims")
    assert table is not None, "no claims table on the page"
    rows = table.select("tbody tr")
    total = sum(len(json.loads(book_pages.claims_path(book_layout.executed_path(c)).read_text())["claims"])
                for c in book_layout.chapters())
    assert len(rows) == total, "the page gathers every chapter's claims"
    rows = rows[:len(saved)]  # Chapter 0 comes first, in _toc.yml's order
    for row, claim in zip(rows, saved):
        cells = [" ".join(td.get_text(" ").split()) for td in row.select("td")]
        assert cells[0].endswith(" ".join(claim.claim.split())) and cells[1].startswith(claim.verdict)
        assert cells[1].endswith("smoke") and f"n = {claim.n if claim.n is not None else '—'}" in cells[1]
        details = row.select_one("td details")
        assert details is not None, "the numbers sit in a drop-down"
        assert " ".join(claim.measured.split()) in " ".join(details.get_text(" ").split())
        link = row.select_one("td a[href]")
        assert " ".join(link.get_text().split()) == "Distillation in one notebook"
        target = urlparse(urljoin(f"http://site/{book_pages.CLAIMS_PAGE}.html", link["href"]))
        linked = site_html / target.path.lstrip("/")
        assert linked.is_file(), f"the claims link {link['href']!r} leads nowhere"
        assert target.fragment, "the link should lead to the ledger's section, not the page top"
        anchored = BeautifulSoup(linked.read_text(encoding="utf-8"), "html.parser").find(id=target.fragment)
        assert anchored is not None, f"{linked.name} has no element with id {target.fragment!r}"
        section = anchored if anchored.name == "section" else anchored.find_parent("section")
        assert "What the paper claims" in section.find(["h1", "h2", "h3"]).get_text()


@pytest.mark.site
@pytest.mark.timeout(1800)
def test_landing_page_states_the_build_and_chapters_hide_papermill_parameters(site_html: Path):
    run = json.loads(book_pages.run_path(book_layout.executed_path(CHAPTER0)).read_text())
    index = BeautifulSoup((site_html / "book" / "index.html").read_text(encoding="utf-8"), "html.parser")
    text = " ".join(index.get_text(" ").split())
    assert "The numbers on this site" in text
    assert "profile smoke" in text and run["torch"] in text
    section = index.find(id="the-numbers-on-this-site")
    links = {a["href"].split("#")[0] for a in section.select("a[href]")}
    assert "part0/distillation.html" in links and "reproduced.html" in links

    chapter = (site_html / "book" / "part0" / "distillation.html").read_text(encoding="utf-8")
    assert "tag_injected-parameters" not in chapter and "# Parameters" not in chapter
    assert "tag_parameters" in chapter  # the chapter's own parameters cell stays
    css = BeautifulSoup(chapter, "html.parser").select('link[rel="stylesheet"][href*="kdnb.css"]')
    assert css, "the site's style sheet (code wraps) is not linked"
    assert "pre-wrap" in (site_html / "_static" / "kdnb.css").read_text()
