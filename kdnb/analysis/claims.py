"""The claim ledger that closes every chapter: "What the paper claims, what we measured".

A chapter lists its claims as :class:`Claim` objects and ends with ``analysis.ledger(claims)``. The table that
cell shows also carries the claims as data (MIME type :data:`CLAIMS_MIME`, next to the HTML table), so the
executed notebook holds them wherever and however it was run. The runner saves them beside the notebook
(``<chapter>.claims.json``), the site gathers every chapter's claims on one page, and ``python -m kdnb claims``
prints them: a chapter has nothing to do beyond writing its ``Claim``s.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import pandas as pd

from .stats import PairedComparison
from .verdicts import (INCONCLUSIVE, MIN_PAIRS, NOT_REPRODUCED, PREMISE_UNMET, REPRODUCED, VERDICTS, Premise,
                       resolution, resolution_note, verdict_for_improvement)

CLAIMS_MIME = "application/vnd.kdnb.claims+json"  # the ledger's claims, as data, in the notebook's output
CLAIMS_FORMAT = 2  # version of that payload (2: premise, n, resolution, paper effect, note)


@dataclass(frozen=True)
class Claim:
    """One row of a chapter's ledger (and of the book's "What reproduced" page).

    The text fields are MyST Markdown on the site and plain text in the terminal.
    """

    claim: str
    paper: str  # what the source reports, quoted with its setting
    measured: str  # what this run of the book computed: mean ± std (n), or a paired difference with its CI
    verdict: str  # one of VERDICTS
    setting: str = ""  # our scale: data, model pair, epochs, seeds
    source: str = ""  # key(s) in book/references.bib of the paper making the claim, comma-separated
    premise: str = ""  # what must hold for the paper's mechanism to act, with this run's numbers
    premise_held: bool | None = None  # None: the claim states no premise
    n: int | None = None  # seeds (or pairs) behind the verdict
    resolution: str = ""  # the smallest difference the design could detect, and how it is computed
    paper_effect: str = ""  # the paper's effect, in the unit of our measurement
    note: str = ""  # in words: an effect below the resolution, what scale would settle an open verdict

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(map(repr, VERDICTS))}, got {self.verdict!r}")
        if self.premise_held is False and self.verdict != PREMISE_UNMET:
            raise ValueError(f"claim {self.claim!r}: its premise failed, so its verdict is {PREMISE_UNMET!r}, "
                             f"not {self.verdict!r}")
        if self.verdict == PREMISE_UNMET and self.premise_held is not False:
            raise ValueError(f"claim {self.claim!r}: {PREMISE_UNMET!r} needs a premise that failed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Claim":
        """The inverse of :meth:`to_dict`; unknown keys (from a later format) are ignored."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names:
                continue
            if k == "premise_held":
                values[k] = None if v is None else bool(v)
            elif k == "n":
                values[k] = None if v is None else int(v)
            else:
                values[k] = str(v)
        return cls(**values)

    @property
    def premise_text(self) -> str:
        """``"— (none stated)"``, or the premise with "held" / "unmet"."""
        if self.premise_held is None:
            return self.premise or "—"
        return f"{self.premise} — {'held' if self.premise_held else 'unmet'}"


def judged(claim: str, paper: str, comparison: PairedComparison, *, paper_effect: float | None,
           premise: Premise | None = None, verdict: str | None = None, unit: str = "points", setting: str = "",
           source: str = "", family: int = 1, measured: str | None = None) -> Claim:
    """A :class:`Claim` judged from one paired comparison (or a family's headline one), with its premise and
    resolution filled in.

    ``verdict`` defaults to :func:`~kdnb.analysis.verdicts.verdict_for_improvement` of ``comparison``; a failed
    ``premise`` makes it :data:`PREMISE_UNMET` whatever the numbers say, and its ``remedy`` becomes the note.
    ``paper_effect`` is the paper's difference in our unit (None when the paper gives none); ``family`` the
    number of comparisons the verdict's rule corrects over (the resolution is that of one of them).
    """
    res = resolution(comparison, family=family)
    verdict = verdict or verdict_for_improvement(comparison)
    note = resolution_note(comparison, paper_effect, verdict, unit=unit, family=family)
    if premise is not None and not premise.held:
        verdict = PREMISE_UNMET
        note = " ".join(x for x in (premise.remedy, note) if x)
    return Claim(claim=claim, paper=paper, measured=measured or comparison.format(), verdict=verdict,
                 setting=setting, source=source,
                 premise="" if premise is None else f"{premise.requirement}: {premise.measured}",
                 premise_held=None if premise is None else premise.held, n=res.n, resolution=res.format(unit),
                 paper_effect="" if paper_effect is None else f"{paper_effect:+.2f} {unit}", note=note)


def claims_payload(claims: Iterable[Claim]) -> dict:
    """The JSON document a ledger stores in the notebook (and the runner in ``<chapter>.claims.json``)."""
    return {"format": CLAIMS_FORMAT, "claims": [c.to_dict() for c in claims]}


def claims_from_payload(payload: dict | str) -> list[Claim]:
    if isinstance(payload, str):
        payload = json.loads(payload)
    return [Claim.from_dict(c) for c in payload.get("claims", [])]


class Ledger(pd.DataFrame):
    """The ledger table (a DataFrame: claim, the paper's number, ours, verdict, our setting).

    Shown in a notebook it is the HTML table without the index, and its display also carries the claims as
    data under :data:`CLAIMS_MIME`. Jupyter front ends and the site pick the HTML; the book's tooling reads
    the data back from the executed notebook.
    """

    _metadata = ["claims"]

    @property
    def _constructor(self):
        return pd.DataFrame  # frames derived from a ledger are plain tables

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/html": self.style.hide(axis="index").to_html(),
                "text/plain": self.to_string(index=False),
                CLAIMS_MIME: claims_payload(self.claims)}


def _with(text: str, label: str, extra: str) -> str:
    if not extra:
        return text
    return f"{text} ({label}: {extra})" if label else f"{text}. {extra}"


def ledger(claims: list[Claim]) -> Ledger:
    """A table with one row per claim: claim, the paper's number (and effect), ours (and the design's
    resolution), the premise (held or not), the verdict (and what would settle it), our setting.

    End a chapter's ledger cell with it: what the cell shows is also what the book's claims page and
    ``python -m kdnb claims`` list.
    """
    claims = list(claims)
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"ledger() takes Claim objects, got {type(c).__name__}")
    table = Ledger([{"Claim": c.claim, "The paper": _with(c.paper, "effect", c.paper_effect),
                     "We measured": _with(c.measured, "resolution", c.resolution),
                     "Premise": c.premise_text, "Verdict": _with(c.verdict, "", c.note),
                     "Our setting": c.setting} for c in claims],
                   columns=["Claim", "The paper", "We measured", "Premise", "Verdict", "Our setting"])
    table.claims = tuple(claims)
    return table


def claims_in_notebook(notebook) -> list[tuple[int, Claim]]:
    """Every claim that a ledger displayed in an executed notebook: ``[(cell index, Claim), ...]``.

    ``notebook`` is an nbformat ``NotebookNode`` (or the same structure as plain dicts). A ledger shown twice
    counts once.
    """
    found: list[tuple[int, Claim]] = []
    seen: set[Claim] = set()
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            payload = output.get("data", {}).get(CLAIMS_MIME)
            if payload is None:
                continue
            for claim in claims_from_payload(payload):
                if claim not in seen:
                    seen.add(claim)
                    found.append((index, claim))
    return found
