"""Tables of results over seeds, the shape every "method × seeds" experiment in the book reports.

A results frame has one row per trained run: a ``method`` column (or any grouping column), a ``seed`` column and
a value (``"test accuracy (%)"``). :func:`by_method` summarises it as mean ± std (n) per method with the paper's
number beside; :func:`paired_by_seed` compares two methods on the seeds they share.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .stats import PairedComparison, paired, summarize

VALUE = "test accuracy (%)"


def by_method(frame: pd.DataFrame, value: str = VALUE, by: str | Sequence[str] = "method",
              paper: Mapping | None = None, order: Sequence | None = None, digits: int = 2) -> pd.DataFrame:
    """One row per group of ``by``: ``ours`` as ``mean ± std (n=…)`` of ``value`` over the group's rows, and,
    when ``paper`` maps a group to the paper's figure (a number or a string), a ``paper`` column beside it.
    ``order`` fixes the row order (groups not in it follow)."""
    if frame.empty:
        raise ValueError("no results to tabulate")
    groups = frame.groupby(by, sort=False)[value]
    rows = {name: summarize(values.to_numpy()).format(digits=digits) for name, values in groups}
    names = list(rows)
    if order is not None:
        names = [n for n in order if n in rows] + [n for n in names if n not in set(order)]
    table = pd.DataFrame({f"{value}, mean ± std": [rows[n] for n in names]},
                         index=pd.Index(names, name=by if isinstance(by, str) else None))
    if paper is not None:
        table["paper"] = [_paper_value(paper.get(n), digits) for n in names]
    return table


def _paper_value(value, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def paired_by_seed(frame: pd.DataFrame, a, b, value: str = VALUE, by: str = "method",
                   seed: str = "seed") -> PairedComparison:
    """``a − b`` of ``value`` over the seeds both groups ran (paired by ``seed``); an error naming the group
    when one has no rows, or when the groups share no seed."""
    def per_seed(name) -> pd.Series:
        rows = frame[frame[by] == name]
        if rows.empty:
            raise ValueError(f"no rows with {by} == {name!r}; have: {sorted(map(str, frame[by].unique()))}")
        if rows[seed].duplicated().any():
            raise ValueError(f"{by} == {name!r} has several rows for one {seed}")
        return rows.set_index(seed)[value]

    left, right = per_seed(a), per_seed(b)
    common = sorted(set(left.index) & set(right.index))
    if not common:
        raise ValueError(f"{a!r} and {b!r} share no {seed}")
    return paired(left.loc[common].to_numpy(), right.loc[common].to_numpy())
