"""Factors: a teacher's feature map encoded by an auto-encoder trained on its own, and factor transfer (FT).

The auto-encoder is Huang et al.'s (IE-KD, §3.1 and the supplement's Table 3), which adopts the factor module
of Kim et al.'s FT: three 3×3 convolutions (stride 1, padding 1) that encode a C-channel map into a factor of
C/2 channels (the "ratio of input feature maps to factor feature maps is set to 2", §4.2) and three 3×3
transposed convolutions that decode it, each of the six layers followed by batch normalisation and a leaky
ReLU of slope 0.1. It is trained **as a run of its own** (method ``"autoencoder"``, a part:
``runs.part(teacher, "autoencoder", schedule)``) on the reconstruction loss Eq. 1, and one such run per
(teacher, layer) serves FT, IE-FT, IE-AT and IE-OD, which take it as an input run
(``method_args={"autoencoder": part_spec}``) and hold its encoder frozen.

FT (Kim et al. 2018): the paraphraser is that auto-encoder; a translator (the same three-convolution encoder)
maps the student's last-stage map to a factor of the teacher factor's width, and the student learns
:math:`\\mathrm{CE} + \\beta\\, d(T(f_S), P(f_T))` with :func:`factor_distance`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import init_weights
from .base import Context, Method
from .features import feature_shapes, last_stage, match_size

LEAKY_SLOPE = 0.1  # Huang et al. §3.1 / Table 3 "leaky-ReLU with rate of 0.1"
FACTOR_RATIO = 2  # §4.2: input feature maps / factor feature maps
RECONSTRUCTIONS = ("l2", "l1")


def coder(in_channels: int, out_channels: int, transposed: bool = False) -> nn.Sequential:
    """Three 3×3, stride-1, padding-1 (transposed) convolutions ``in→in→out→out``, each followed by BatchNorm and
    LeakyReLU(0.1): the encoder (``in=C, out=C/2``) or decoder (``in=C/2, out=C``, transposed) of Huang et al.'s
    supplement Table 3, and the student-side encoders of IE-KD (§3.2) and FT's translator. Convolutions without
    bias (a BatchNorm follows), Kaiming fan-out initialisation, BatchNorm 1/0."""
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"a coder needs at least one channel in and out; got {in_channels} -> {out_channels}")
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in ((in_channels, in_channels), (in_channels, out_channels), (out_channels, out_channels)):
        layers += [conv(c_in, c_out, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.LeakyReLU(LEAKY_SLOPE)]
    block = nn.Sequential(*layers)
    init_weights(block)
    for module in block.modules():  # init_weights covers Conv2d; the decoder's transposed convs alike
        if isinstance(module, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return block


class FactorAutoencoder(nn.Module):
    """Encoder ``C → C/ratio`` and decoder back (see :func:`coder`); ``forward`` returns ``(factor,
    reconstruction)``. ``layer`` records which feature of the teacher it encodes."""

    def __init__(self, channels: int, ratio: int = FACTOR_RATIO, layer: str = "") -> None:
        super().__init__()
        if ratio < 1 or channels % ratio:
            raise ValueError(f"the factor ratio must divide the {channels} channels; got {ratio}")
        self.channels, self.factor_channels, self.layer = channels, channels // ratio, layer
        self.encoder = coder(channels, self.factor_channels)
        self.decoder = coder(self.factor_channels, channels, transposed=True)

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(feature)
        return factor, self.decoder(factor)


def reconstruction_loss(feature: Tensor, reconstruction: Tensor, kind: str = "l2") -> Tensor:
    """Eq. 1, :math:`\\|f_T - R(f_T)\\|^2`, as the mean squared difference over all elements (``"l2"``; the
    squared norm up to the constant number of elements), or the released code's mean absolute difference
    (``"l1"``)."""
    if kind == "l2":
        return (feature - reconstruction).pow(2).mean()
    if kind == "l1":
        return (feature - reconstruction).abs().mean()
    raise ValueError(f"unknown reconstruction {kind!r}; choose one of: {', '.join(RECONSTRUCTIONS)}")


def factor_distance(a: Tensor, b: Tensor) -> Tensor:
    """Eq. 2's :math:`\\|F_a/\\|F_a\\|_2 - F_b/\\|F_b\\|_2\\|_1` as the released code reduces it: each sample's factor
    flattened and divided by its L2 norm, then the **mean** absolute difference over batch and elements (the
    paper's L1 norm sums over a sample's D elements: the two differ by the constant factor D, which the loss
    weights absorb; FT's β = 500 and IE-KD's λ = 50 are for this mean). ``a`` and ``b``: ``(B, ...)`` with the same
    number of elements per sample; ``b`` is not detached here (callers pass the teacher side without gradient)."""
    a, b = a.flatten(1), b.flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"factors of different sizes: {tuple(a.shape)} and {tuple(b.shape)} (flattened); "
                         "bring maps to one size first (kdnb.distill.features.match_size)")
    return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).abs().mean()


class AutoEncoder(Method):
    """The teacher's factor auto-encoder trained on its own (Huang et al. §3.1): a *part* run
    (``runs.part(teacher, "autoencoder", schedule)``), no student.

    Term ``"rec"``: Eq. 1 on the teacher's ``layer`` (default: its last stage, :func:`.features.last_stage`), the
    teacher run without gradient and in eval mode. ``reconstruction="l2"`` is Eq. 1 (mean-reduced); ``"l1"`` the
    released code's loss (``shared/notes/kd-methods.md`` §1.3). The supplement trains it "for the maximum of 30
    epochs starting with learning rate of 0.1" (the schedule is the caller's). ``Run.network("autoencoder")``
    returns the trained :class:`FactorAutoencoder`.
    """

    requires_teacher = True
    part = True

    def __init__(self, student: nn.Module | None, teacher: nn.Module | None = None, layer: str | None = None,
                 ratio: int = FACTOR_RATIO, reconstruction: str = "l2") -> None:
        super().__init__(student, teacher)
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"unknown reconstruction {reconstruction!r}; choose one of: {', '.join(RECONSTRUCTIONS)}")
        self.layer = layer or last_stage(teacher)
        channels = feature_shapes(teacher, [self.layer])[self.layer][0]
        self.reconstruction = reconstruction
        self.autoencoder = FactorAutoencoder(channels, ratio, self.layer)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[None, dict[str, Tensor]]:
        feature = self.remembered("teacher_feature", x, context, lambda x: self.teacher_features(x)[1][self.layer])
        _, reconstruction = self.autoencoder(feature)
        return None, {"rec": reconstruction_loss(feature, reconstruction, self.reconstruction)}


@torch.no_grad()
def encoded_teacher_feature(method: Method, x: Tensor, context: Context | None) -> Tensor:
    """``method.autoencoder``'s (frozen) encoding of the teacher's feature it was trained on — FT's :math:`P(f_T)`,
    IE-KD's :math:`F_T` — remembered per sample when ``context`` allows (:meth:`Method.remembered`)."""
    return method.remembered("teacher_factor", x, context, lambda x: method.autoencoder.encoder(
        method.teacher_features(x)[1][method.autoencoder.layer]))


def trained_autoencoder(method: Method, run, teacher: nn.Module) -> FactorAutoencoder:
    """The auto-encoder of part run ``run`` (an ``"autoencoder"`` run), held frozen by ``method`` as child
    ``"autoencoder"``. Checks that it encodes a network of the teacher's architecture at a feature of the width
    it was trained for (the identity of the teacher's weights is the caller's: pass the part run made for the
    same teacher spec)."""
    if getattr(run, "spec", None) is None or run.spec.method != "autoencoder":
        raise ValueError(f"autoencoder must be an 'autoencoder' part run (runs.part(teacher, 'autoencoder', ...)); "
                         f"got {run!r}")
    trained_for = run.spec.teacher.model
    if trained_for != getattr(teacher, "name", trained_for):
        raise ValueError(f"the auto-encoder was trained on a {trained_for!r} teacher; this run's teacher is "
                         f"{teacher.name!r}")
    autoencoder = run.network("autoencoder", device="cpu")
    width = feature_shapes(teacher, [autoencoder.layer])[autoencoder.layer][0]
    if width != autoencoder.channels:
        raise ValueError(f"the auto-encoder encodes {autoencoder.channels} channels at {autoencoder.layer!r}; the "
                         f"teacher has {width} there")
    return method.hold_frozen("autoencoder", autoencoder)


class FT(Method):
    """Factor transfer (Kim et al. 2018) with the shared factor auto-encoder as paraphraser:
    :math:`\\mathcal{L} = \\mathrm{CE}(y, z_s) + \\beta\\, d\\big(T(f_S), P(f_T)\\big)`, with
    :func:`factor_distance` (the normalised L1 of FT's Eq. 4 and IE-KD's Eq. 2, mean-reduced).

    ``autoencoder``: the part run (``runs.part(teacher, "autoencoder", ...)``) whose encoder is the paraphraser
    P, frozen; ``layer``: the student's feature (default its last stage; FT and IE-KD use the last block's
    output); the translator T is a :func:`coder` from its channels to the factor's. β = 500 is the official FT
    code's weight for this reduction (``shared/notes/kd-methods.md`` §2.3). Maps of different sizes meet at the
    smaller (:mod:`.features` rule 2). Terms ``"ce"`` and ``"ft"``; the teacher and the paraphraser run without
    gradient. Kim et al. train the translator with an optimiser of its own on the student's schedule; with
    equal settings that is one SGD over both.
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, autoencoder,
                 beta: float = 500.0, layer: str | None = None) -> None:
        super().__init__(student, teacher)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)
        self.layer = layer or last_stage(student)
        paraphraser = trained_autoencoder(self, autoencoder, teacher)
        channels = feature_shapes(student, [self.layer])[self.layer][0]
        self.translator = coder(channels, paraphraser.factor_channels)

    @torch.no_grad()
    def teacher_factor(self, x: Tensor, context: Context | None = None) -> Tensor:
        """:math:`P(f_T)`: the frozen paraphraser's encoding of the teacher's feature (remembered per sample when
        ``context`` allows)."""
        return encoded_teacher_feature(self, x, context)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        if not context.uses("ft"):
            logits = self.student(x)
            return logits, {"ce": F.cross_entropy(logits, y)}
        logits, features = self.student.forward_features(x)
        student_factor, teacher_factor = match_size(self.translator(features[self.layer]),
                                                     self.teacher_factor(x, context))
        return logits, {"ce": F.cross_entropy(logits, y),
                        "ft": self.beta * factor_distance(student_factor, teacher_factor)}
