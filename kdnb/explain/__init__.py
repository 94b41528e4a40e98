"""Explanations: all-class maps (Grad-CAM with an exact fast path, gradients, Grad×Input, guided backprop).

``class_maps(model, x, method="gradcam", layer=None)`` → ``(N, K, *map_shape)``; see :mod:`kdnb.explain.maps`.
"""
from __future__ import annotations

from .maps import (INPUT_METHODS, METHODS, all_class_gradients, class_maps, gap_linear_layer, gradcam_closed_form,
                   gradcam_from_forward)

__all__ = ["INPUT_METHODS", "METHODS", "all_class_gradients", "class_maps", "gap_linear_layer",
           "gradcam_closed_form", "gradcam_from_forward"]
