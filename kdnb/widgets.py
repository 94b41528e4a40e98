"""Explorers for JupyterLab. Each wraps a static figure function of :mod:`kdnb.plots`: the page shows the
static figure first, and the widget only redraws it (widget callbacks cannot run on the static site)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from . import plots


def temperature_explorer(logits: torch.Tensor, images: torch.Tensor, class_names: Sequence[str],
                         labels: torch.Tensor | None = None):
    """Pick a test image and a temperature; see the teacher's soft targets at T=1 and at the chosen T."""
    import ipywidgets as widgets
    from IPython.display import display

    image = widgets.IntSlider(0, 0, len(logits) - 1, description="image", continuous_update=False)
    temperature = widgets.FloatLogSlider(4.0, base=10, min=-0.5, max=1.5, step=0.05, description="T",
                                         continuous_update=False, readout_format=".2f")
    out = widgets.Output()

    @out.capture(clear_output=True, wait=True)
    def draw(change=None) -> None:
        i = image.value
        title = f"true class: {class_names[int(labels[i])]}" if labels is not None else ""
        fig = plots.soft_targets(logits[i], [1.0, temperature.value], class_names, image=images[i], title=title)
        display(fig)
        plt.close(fig)

    image.observe(draw, names="value")
    temperature.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([image, temperature]), out])
