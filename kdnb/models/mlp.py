"""Fully connected network on flattened images, in the spirit of the MNIST experiments
of Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a Neural Network").

Structure: flatten -> [Linear -> ReLU -> (dropout)] per hidden layer -> Linear.
Defaults give 784-1024-1024-10 for 28x28 single-channel inputs; the input width is
``in_channels * image_size ** 2``.

Features: ``fcJ.pre`` (the J-th hidden Linear output, before ReLU) and ``fcJ``
(= relu(fcJ.pre), before dropout) for each hidden layer, then ``pooled`` (the last
hidden vector as fed to the classifier, i.e. after dropout; equal to the last
``fcJ`` in eval mode) and ``logits``. Hidden layer J is the module
``hidden_layers.{J-1}``, so ``prefixes_up_to("fc1")`` is ``("hidden_layers.0",)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, Layout, record


class MLP(FeatureModel):
    """Multi-layer perceptron with ReLU hidden layers and optional dropout."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: Sequence[int] = (1024, 1024),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.name = "mlp"
        self.config = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "image_size": image_size,
            "hidden": tuple(hidden),
            "dropout": dropout,
        }
        self.input_dim = in_channels * image_size * image_size
        self.dropout = dropout

        layers = []
        width_in = self.input_dim
        for width in hidden:
            layers.append(nn.Linear(width_in, width))
            width_in = width
        self.hidden_layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(width_in, num_classes)

        self._set_feature_names()

    def _layout(self) -> Layout:
        count = len(self.hidden_layers)
        hidden: Layout = [(f"hidden_layers.{j - 1}", (f"fc{j}.pre", f"fc{j}")) for j in range(1, count + 1)]
        return [*hidden, (None, ("pooled",)), ("classifier", ("logits",))]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.input_dim:
            raise ValueError(
                f"{self.name} expects {self.input_dim} input values per sample "
                f"(in_channels={self.config['in_channels']}, image_size={self.config['image_size']}); "
                f"got {x.shape[1]}"
            )
        for index, layer in enumerate(self.hidden_layers, start=1):
            pre = layer(x)
            x = F.relu(pre)
            record(features, f"fc{index}.pre", pre)
            record(features, f"fc{index}", x)
            if self.dropout > 0:
                x = F.dropout(x, p=self.dropout, training=self.training)
        record(features, "pooled", x)
        logits = self.classifier(x)
        record(features, "logits", logits)
        return logits
