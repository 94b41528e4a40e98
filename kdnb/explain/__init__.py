"""Explanations: all-class maps (Grad-CAM with an exact fast path, gradients, Grad×Input, guided backprop).

``class_maps(model, x, method="gradcam", layer=None)`` → ``(N, K, *map_shape)``; see :mod:`kdnb.explain.maps`.
"""
from __future__ import annotations

from .maps import (INPUT_METHODS, METHODS, all_class_gradients, class_maps, gap_linear_layer, gradcam_closed_form,
                   gradcam_from_forward)

__all__ = ["INPUT_METHODS", "METHODS", "all_class_gradients", "class_maps", "gap_linear_layer",
           "gradcam_closed_form", "gradcam_from_forward"]

# LRP heat maps of Huang et al. (2021) §4.7 on LRP twins. The function ``lrp`` stays in its module
# (``from kdnb.explain.lrp import lrp``), so that ``kdnb.explain.lrp`` remains the module.
from .lrp import EPSILON, GAMMA, RULES, STABILIZER, Epsilon, Gamma, group_relevance, heatmap, layer_rules
from .lrp_twins import LRPTwin, fold_batchnorm, last_feature_map, lrp_twin

__all__ += ["EPSILON", "GAMMA", "RULES", "STABILIZER", "Epsilon", "Gamma", "group_relevance", "heatmap",
            "layer_rules", "LRPTwin", "fold_batchnorm", "last_feature_map", "lrp_twin"]
