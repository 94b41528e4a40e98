"""Three fully connected layers, FC1-FC3, on a conv trunk: the head of the networks that
Cheng et al. 2020 ("Explaining Knowledge Distillation by Quantifying the Knowledge",
section 4.1) distil and measure layer by layer. AlexNet and VGG end in three FC layers;
for ResNets the paper replaces the single FC layer by two convs and three FCs.

Layout: ``FC1 -> ReLU -> dropout -> FC2 -> ReLU -> dropout -> FC3``.

* FC3 is the classifier (``model.classifier``) and has **no ReLU**: its output is the
  logits. In AlexNet and VGG the third FC layer is the classifier itself, and in the
  ResNets the three-FC block replaces the only FC layer, the classifier, so its last
  layer must emit the class scores. The paper says the block's layers are "each
  followed by a ReLU layer"; that can only hold for FC1 and FC2 (a ReLU on the logits
  would clip every negative class score). The released code agrees: its ``fc3``
  feature is the logits.
* Dropout (``dropout``, the drop probability) follows the ReLUs of FC1 and FC2, the
  two layers AlexNet (Krizhevsky et al. 2012) and VGG train with dropout 0.5.
  torchvision's AlexNet applies it before FC1 and FC2 instead.

Features added by the head: ``fc1.pre`` (FC1's output, before its ReLU; what the
released code distils as "fc1") and ``fc1`` (= relu(fc1.pre), before dropout), the
same for FC2, then ``pooled`` (the classifier's input: ``fc2`` after dropout, equal to
``fc2`` in eval mode), ``fc3`` and ``logits`` (the same tensor, under both names so the
three FC layers are addressed alike). The modules are ``fc1``, ``fc2`` and
``classifier``; ``prefixes_up_to("fc2")`` ends with ``"fc1", "fc2"``, and freezing those
prefixes leaves exactly FC3 to train (the paper's second stage for a net distilled at FC2).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, Layout, record


def check_head_options(fc_width: int, dropout: float) -> None:
    """ValueError for a non-positive ``fc_width`` or a ``dropout`` outside [0, 1)."""
    if int(fc_width) != fc_width or fc_width < 1:
        raise ValueError(f"fc_width must be a positive integer; got {fc_width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")


class FCHeadModel(FeatureModel):
    """Base of the FC-headed families: builds, runs and describes the FC1-FC3 head."""

    def _build_fc_head(self, in_features: int, fc_width: int, num_classes: int, dropout: float) -> None:
        """Set ``fc1``, ``fc2``, ``classifier`` (FC3) and ``dropout``; constructors call
        :func:`check_head_options` first, before building their trunk."""
        self.dropout = dropout
        self.fc1 = nn.Linear(in_features, fc_width)
        self.fc2 = nn.Linear(fc_width, fc_width)
        self.classifier = nn.Linear(fc_width, num_classes)

    def _run_fc_head(self, x: Tensor, features: Features | None) -> Tensor:
        """``x``: the flattened trunk output ``(B, in_features)``; returns the logits."""
        for name, layer in (("fc1", self.fc1), ("fc2", self.fc2)):
            pre = layer(x)
            x = F.relu(pre)
            record(features, f"{name}.pre", pre)
            record(features, name, x)
            if self.dropout > 0:
                x = F.dropout(x, p=self.dropout, training=self.training)
        record(features, "pooled", x)
        logits = self.classifier(x)
        record(features, "fc3", logits)
        record(features, "logits", logits)
        return logits

    @staticmethod
    def _fc_head_layout() -> Layout:
        return [
            ("fc1", ("fc1.pre", "fc1")),
            ("fc2", ("fc2.pre", "fc2", "pooled")),
            ("classifier", ("fc3", "logits")),
        ]
