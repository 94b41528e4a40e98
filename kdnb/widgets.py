"""Explorers: interactive figures that work on the static site (no kernel, no network) and in JupyterLab.

An explorer precomputes one PNG *frame* per point of a small parameter grid, puts the frames in an
``ipywidgets.Stack`` of ``Image`` widgets and links one control per grid axis to the stack's
``selected_index`` with ``jslink``: a link that runs in the browser, not in the kernel. When papermill runs a
chapter, the widget state (frames included) is saved in the executed notebook; the site embeds it in the page
and renders it with the widget JavaScript served by the site itself. Moving a control then shows another
precomputed frame, with no kernel. In JupyterLab the same explorer behaves the same way (the links run in the
front end); to explore other values there, re-run the cell with another grid.

One axis: ``control -> Stack[frames]``. Two axes: ``first control -> Stack[Stack[frames], ...]`` and the
second control drives every inner stack (``jsdlink``), so the two controls are independent. Widget callbacks
(``observe``, ``interact``) are never used: they need a kernel and do nothing on the site.

Frame budget and page weight: every frame is embedded in the page as base64 PNG (4/3 of its size). An explorer
takes at most :data:`FRAME_BUDGET` frames and :data:`BYTE_BUDGET` bytes of PNG (a ``ValueError`` says which
was exceeded), so it adds at most about 1.4 MB to its page. Measured: a frame of a full-width figure at
:data:`FRAME_DPI` dpi (806 × 259 px) is 20–22 KB; Chapter 0's temperature explorer (6 images × 5 temperatures =
30 frames, 643 KB of PNG) makes its page 0.98 MB of HTML instead of 0.08 MB. A page with widgets also loads
the widget JavaScript (``embed.js``, 1.9 MB, 456 KB gzipped, cached by the browser across pages). Keep grids
small: a few values per axis, each showing something different.
"""
from __future__ import annotations

import io
import numbers
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Mapping, Sequence

import torch

from . import plots

FRAME_BUDGET = 40          # frames per explorer
BYTE_BUDGET = 1_000_000    # bytes of PNG per explorer (the page grows by 4/3 of this: base64)
FRAME_DPI = 72             # resolution of frames drawn from matplotlib figures

CONTROLS = ("slider", "dropdown", "buttons")


def render_png(frame: Any, dpi: int = FRAME_DPI) -> bytes:
    """PNG bytes of a frame: a matplotlib ``Figure`` (closed afterwards) or PNG bytes as they are."""
    if isinstance(frame, (bytes, bytearray)):
        data = bytes(frame)
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("a frame given as bytes must be a PNG image")
        return data
    savefig = getattr(frame, "savefig", None)
    if savefig is None:
        raise TypeError(f"a frame must be a matplotlib Figure or PNG bytes, not {type(frame).__name__}")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    savefig(buffer, format="png", dpi=dpi)
    plt.close(frame)
    return buffer.getvalue()


def _label(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


@dataclass
class Axis:
    """One parameter of the grid: its name (the control's description), values, labels and control kind."""
    name: str
    values: list
    labels: list[str]
    control: str

    def widget(self):
        import ipywidgets as widgets

        options = list(zip(self.labels, range(len(self.values))))
        common = dict(options=options, value=0, description=self.name,
                      style={"description_width": "initial"})
        if self.control == "slider":
            return widgets.SelectionSlider(continuous_update=True, **common)
        if self.control == "dropdown":
            return widgets.Dropdown(**common)
        return widgets.ToggleButtons(**common)


@dataclass
class Explorer:
    """What :func:`explorer` built: ``widget`` (display it), the ``controls`` (one per axis, in grid order), the
    browser-side ``links`` from controls to stacks, the ``frames`` as PNG bytes keyed by the tuple of parameter
    values, and ``page_bytes``: about how much the explorer adds to its page (base64 frames)."""
    widget: Any
    controls: list
    axes: list[Axis]
    links: list
    frames: dict[tuple, bytes] = field(repr=False)

    @property
    def frame_bytes(self) -> int:
        return sum(len(png) for png in self.frames.values())

    @property
    def page_bytes(self) -> int:
        return 4 * ((self.frame_bytes + 2) // 3) + 400 * len(self.frames)  # base64 + each Image model's state

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explorer(draw: Callable[..., Any], grid: Mapping[str, Sequence], *,
             labels: Mapping[str, Sequence[str]] | None = None,
             controls: Mapping[str, str] | None = None, dpi: int = FRAME_DPI,
             max_frames: int = FRAME_BUDGET, max_bytes: int = BYTE_BUDGET) -> Explorer:
    """An explorer of ``draw`` over ``grid``: one frame per combination of values, one control per axis.

    ``draw(**params)`` returns a matplotlib ``Figure`` (rendered at ``dpi`` and closed) or PNG bytes.
    ``grid`` maps each parameter name to its values, one or two axes, in the order the controls appear; the
    first value of each axis is shown first. ``labels`` gives display labels for an axis (default: the values,
    numbers as ``%g``); ``controls`` picks ``"slider"``, ``"dropdown"`` or ``"buttons"`` per axis (default: a
    slider for unlabelled numbers, a dropdown otherwise). Raises ``ValueError`` before drawing when the grid has more
    than ``max_frames`` frames, and after drawing when the frames exceed ``max_bytes`` bytes of PNG.

    Used in: book/part0/distillation (temperature explorer).
    """
    import ipywidgets as widgets

    labels = dict(labels or {})
    controls = dict(controls or {})
    unknown = (set(labels) | set(controls)) - set(grid)
    if unknown:
        raise ValueError(f"labels/controls name axes not in the grid: {sorted(unknown)}")
    if not 1 <= len(grid) <= 2:
        raise ValueError(f"an explorer has one or two axes (controls), not {len(grid)}: {list(grid)}")
    axes = []
    for name, values in grid.items():
        values = list(values)
        if not values:
            raise ValueError(f"axis {name!r} has no values")
        shown = [str(s) for s in labels.get(name, [_label(v) for v in values])]
        if len(shown) != len(values):
            raise ValueError(f"axis {name!r}: {len(shown)} labels for {len(values)} values")
        if len(set(shown)) != len(shown):
            raise ValueError(f"axis {name!r}: labels must be distinct, got {shown}")
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        kind = controls.get(name, "slider" if numeric and name not in labels else "dropdown")
        if kind not in CONTROLS:
            raise ValueError(f"axis {name!r}: control {kind!r} is not one of {CONTROLS}")
        axes.append(Axis(name, values, shown, kind))
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > max_frames:
        raise ValueError(f"{count} frames ({' x '.join(str(len(a.values)) for a in axes)}) exceed the budget "
                         f"of {max_frames} per explorer: use fewer values")

    frames: dict[tuple, bytes] = {}
    for point in product(*(axis.values for axis in axes)):
        frames[point] = render_png(draw(**{axis.name: value for axis, value in zip(axes, point)}), dpi=dpi)
    total = sum(len(png) for png in frames.values())
    if total > max_bytes:
        raise ValueError(f"{count} frames take {total:,} bytes of PNG, over the budget of {max_bytes:,} per "
                         f"explorer: use fewer values, a smaller figure or a lower dpi (now {dpi})")

    # one layout model shared by every frame; no margin, or a frame scaled to the column overflows it by 4 px
    fit = widgets.Layout(max_width="100%", height="auto", margin="0")

    def image(point: tuple):
        return widgets.Image(value=frames[point], format="png", layout=fit)

    made = [axis.widget() for axis in axes]
    if len(axes) == 1:
        stack = widgets.Stack([image((v,)) for v in axes[0].values], selected_index=0)
        links = [widgets.jslink((made[0], "index"), (stack, "selected_index"))]
    else:
        outer, inner = axes
        rows = [widgets.Stack([image((a, b)) for b in inner.values], selected_index=0) for a in outer.values]
        stack = widgets.Stack(rows, selected_index=0)
        links = [widgets.jslink((made[0], "index"), (stack, "selected_index"))]
        links += [widgets.jsdlink((made[1], "index"), (row, "selected_index")) for row in rows]
    box = widgets.VBox([widgets.HBox(made, layout=widgets.Layout(flex_flow="row wrap")), stack])
    box.add_class("kdnb-explorer")
    return Explorer(box, made, axes, links, frames)


def temperature_explorer(logits: torch.Tensor, images: torch.Tensor, class_names: Sequence[str],
                         labels: torch.Tensor | None = None, indices: Sequence[int] | None = None,
                         temperatures: Sequence[float] = (1, 2, 4, 8, 16), dpi: int = FRAME_DPI) -> Explorer:
    """Pick a test image and a temperature; see the teacher's soft targets at T=1 and at the chosen T.

    ``indices`` picks the images (default: the first six); each is labelled by its true class when
    ``labels`` is given. Frames: ``len(indices) × len(temperatures)`` (30 by default, about 640 KB of PNG).

    Used in: book/part0/distillation.
    """
    indices = [int(i) for i in (indices if indices is not None else range(min(6, len(logits))))]
    if labels is not None:
        names = [f"{class_names[int(labels[i])]} (#{i})" for i in indices]
    else:
        names = [f"#{i}" for i in indices]
    by_index = dict(zip(indices, names))

    def draw(image: int, T: float):
        shown = [1.0] if T == 1 else [1.0, float(T)]
        title = f"true class: {class_names[int(labels[image])]}" if labels is not None else f"test image #{image}"
        return plots.soft_targets(logits[image], shown, class_names, image=images[image], title=title)

    return explorer(draw, {"image": indices, "T": list(temperatures)},
                    labels={"image": [by_index[i] for i in indices]}, dpi=dpi)
