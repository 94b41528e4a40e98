"""Explorers (kdnb.widgets) without a browser: frames, links, budgets. The site test drives them in Chromium."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("agg")  # this process draws frames only; kernels of the notebook tests are not affected

import ipywidgets
import matplotlib.pyplot as plt
import pytest
import torch

from kdnb import widgets

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_png(value: int) -> bytes:
    """A distinct 2x2 PNG per value, made without matplotlib's figure machinery."""
    buffer = io.BytesIO()
    plt.imsave(buffer, [[value, 0], [0, 255 - value]], format="png", cmap="gray", vmin=0, vmax=255)
    return buffer.getvalue()


def test_one_axis_stack_of_frames_linked_in_the_browser():
    explorer = widgets.explorer(lambda T: tiny_png(int(T * 10)), {"T": [1, 2, 4]})
    box = explorer.widget
    control, stack = explorer.controls[0], box.children[1]
    assert isinstance(control, ipywidgets.SelectionSlider)  # numbers: a slider
    assert control.description == "T" and [label for label, _ in control.options] == ["1", "2", "4"]
    assert isinstance(stack, ipywidgets.Stack) and stack.selected_index == 0
    assert [child.value for child in stack.children] == [tiny_png(10), tiny_png(20), tiny_png(40)]
    assert all(child.format == "png" for child in stack.children)
    links = explorer.links
    assert len(links) == 1 and type(links[0]).__name__ == "Link"  # jslink: runs in the browser, no kernel
    assert links[0].source == (control, "index") and links[0].target == (stack, "selected_index")
    assert "kdnb-explorer" in box._dom_classes
    assert set(explorer.frames) == {(1,), (2,), (4,)}
    # displaying an Explorer displays its widget
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()


def test_two_axes_nested_stacks_each_driven_by_its_control():
    calls = []

    def draw(image, layer):
        calls.append((image, layer))
        return tiny_png(10 * image + layer)

    explorer = widgets.explorer(draw, {"image": [0, 1, 2], "layer": [1, 2]},
                                labels={"image": ["cat", "dog", "car"]}, controls={"layer": "buttons"})
    first, second = explorer.controls
    assert isinstance(first, ipywidgets.Dropdown)  # labelled (or non-numeric) values: a dropdown by default
    assert [label for label, _ in first.options] == ["cat", "dog", "car"]
    assert isinstance(second, ipywidgets.ToggleButtons)
    assert calls == [(i, j) for i in (0, 1, 2) for j in (1, 2)]  # each frame drawn once
    outer = explorer.widget.children[1]
    assert len(outer.children) == 3 and all(len(row.children) == 2 for row in outer.children)
    for i, row in enumerate(outer.children):
        assert [frame.value for frame in row.children] == [tiny_png(10 * i + j) for j in (1, 2)]
    links = explorer.links
    pairs = {(link.source[0].model_id, link.target[0].model_id, type(link).__name__) for link in links}
    assert (first.model_id, outer.model_id, "Link") in pairs
    for row in outer.children:  # the second control drives every inner stack
        assert (second.model_id, row.model_id, "DirectionalLink") in pairs
    assert len(links) == 1 + len(outer.children)
    assert explorer.page_bytes > explorer.frame_bytes * 4 // 3


def test_figures_become_pngs_and_are_closed():
    def draw(k):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([0, k])
        return fig

    before = len(plt.get_fignums())
    explorer = widgets.explorer(draw, {"k": [1, 2]}, dpi=50)
    assert len(plt.get_fignums()) == before, "frame figures were left open (they would show in the notebook)"
    for png in explorer.frames.values():
        assert png.startswith(PNG)
    assert explorer.frames[(1,)] != explorer.frames[(2,)]


def test_budgets_and_bad_grids_are_refused():
    with pytest.raises(ValueError, match="budget"):
        widgets.explorer(lambda a, b: pytest.fail("drawn before the frame count was checked"),
                         {"a": range(7), "b": range(7)})  # 49 frames
    with pytest.raises(ValueError, match="bytes of PNG"):
        widgets.explorer(lambda a: tiny_png(a), {"a": [1, 2]}, max_bytes=10)
    with pytest.raises(ValueError, match="one or two axes"):
        widgets.explorer(lambda a, b, c: tiny_png(0), {"a": [1], "b": [1], "c": [1]})
    with pytest.raises(ValueError, match="labels"):
        widgets.explorer(lambda a: tiny_png(a), {"a": [1, 2]}, labels={"a": ["x"]})
    with pytest.raises(ValueError, match="not in the grid"):
        widgets.explorer(lambda a: tiny_png(a), {"a": [1, 2]}, controls={"b": "slider"})
    with pytest.raises(ValueError, match="control"):
        widgets.explorer(lambda a: tiny_png(a), {"a": [1, 2]}, controls={"a": "knob"})
    with pytest.raises(TypeError, match="Figure or PNG"):
        widgets.explorer(lambda a: "not a frame", {"a": [1]})


def test_temperature_explorer_frames_for_each_image_and_temperature():
    torch.manual_seed(0)
    names = [f"class {k}" for k in range(10)]
    logits, images, labels = torch.randn(4, 10), torch.rand(4, 1, 28, 28), torch.tensor([3, 1, 4, 1])
    explorer = widgets.temperature_explorer(logits, images, names, labels, indices=[2, 0], temperatures=[1, 4],
                                            dpi=30)
    image, temperature = explorer.controls
    assert [label for label, _ in image.options] == ["class 4 (#2)", "class 3 (#0)"]
    assert [label for label, _ in temperature.options] == ["1", "4"]
    assert set(explorer.frames) == {(2, 1), (2, 4), (0, 1), (0, 4)}
    assert len(set(explorer.frames.values())) == 4
    assert explorer.frame_bytes <= widgets.BYTE_BUDGET
