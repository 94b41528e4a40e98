"""Safe glue for the book's pages: values become plain Python before MyST-NB stores them.

NumPy 2 writes ``np.float64(0.9)`` as a scalar's text, which breaks ``{glue:text}`key:.2f``` format specs, so
numbers are converted to ``float``/``int`` here. Outside Jupyter Book (plain Python) the value is just shown.
"""
from __future__ import annotations

import numbers
from typing import Any


def plain(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return plain(value.item())
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` references (numbers made plain first).

    Returns nothing, so that a cell ending in ``glue(...)`` shows no stray value on the page.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # running outside the book's environment
        return
    value = plain(value)
    if isinstance(value, str):
        # A string's text/plain is its repr ('Dress', quotes included); as Markdown it reads as prose.
        # Refer to it with {glue:md}`name`.
        from IPython.display import Markdown

        value = Markdown(value)
    myst_glue(name, value, display=display)
