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

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
MIN_PAIRS = 3  # with two pairs the t-interval has one degree of freedom: too few to call a verdict

CLAIMS_MIME = "application/vnd.kdnb.claims+json"  # the ledger's claims, as data, in the notebook's output
CLAIMS_FORMAT = 1  # version of that payload


def verdict_for_improvement(comparison: PairedComparison) -> str:
    """Verdict on a claim "A improves on B" from the paired differences A − B.

    Reproduced when the whole confidence interval is above zero, not reproduced when it is wholly below
    zero (we measured the opposite), inconclusive otherwise. Also inconclusive: fewer than
    ``MIN_PAIRS`` pairs, or pairs without any spread (identical differences give a zero-width interval that
    says nothing about seed-to-seed variation, as happens when barely trained networks all predict one class).
    """
    d = comparison.difference
    if d.n < MIN_PAIRS or not d.std > 0:
        return INCONCLUSIVE
    if d.ci_low > 0:
        return REPRODUCED
    if d.ci_high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """One row of a chapter's ledger (and of the book's "What reproduced" page).

    The text fields are MyST Markdown on the site and plain text in the terminal.
    """

    claim: str
    paper: str  # what the source reports, quoted with its setting
    measured: str  # what this run of the book computed: mean ± std (n), or a paired difference with its CI
    verdict: str  # REPRODUCED, NOT_REPRODUCED or INCONCLUSIVE
    setting: str = ""  # our scale: data, model pair, epochs, seeds
    source: str = ""  # key(s) in book/references.bib of the paper making the claim, comma-separated

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {REPRODUCED!r}, {NOT_REPRODUCED!r}, {INCONCLUSIVE!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Claim":
        """The inverse of :meth:`to_dict`; unknown keys (from a later format) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: str(v) for k, v in data.items() if k in names})


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


def ledger(claims: list[Claim]) -> Ledger:
    """A table with one row per claim: claim, the paper's number, ours, verdict, our setting.

    End a chapter's ledger cell with it: what the cell shows is also what the book's claims page and
    ``python -m kdnb claims`` list.
    """
    claims = list(claims)
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"ledger() takes Claim objects, got {type(c).__name__}")
    table = Ledger([{"Claim": c.claim, "The paper": c.paper, "We measured": c.measured,
                     "Verdict": c.verdict, "Our setting": c.setting} for c in claims],
                   columns=["Claim", "The paper", "We measured", "Verdict", "Our setting"])
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
