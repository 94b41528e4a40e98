"""Inheritance and exploration (Huang et al. 2021, IE-KD): the student's last-stage features are split on their
channels into an inheritance part, pulled towards the teacher's factor, and an exploration part, pushed away
from it; and IE-DML, two such processes in opposite directions between two networks trained together.

§3.2: the split is random ("we randomly split representations of the student network into inheritance and
exploration parts", §4.2), fixed for the run, a share ``eta`` of the channels inheriting (η = 0.5: "even
division achieves the optimal performance", Table 5). It is held by a child module (``Run.network("split")``).
Each part has an encoder (:func:`.factor.coder`, part channels → the teacher factor's width) giving
:math:`F_{inh}` and :math:`F_{exp}`; the teacher's factor :math:`F_T` comes from the frozen encoder of the
teacher's auto-encoder, a part run of its own (:class:`.factor.AutoEncoder`). The loss is Eq. 4,
:math:`\\mathcal{L}_{goal} + \\lambda_{inh} L_{inh} + \\lambda_{exp} L_{exp}` with Eq. 2 and Eq. 3 (:func:`ie_losses`).

The variants of §4.2: IE-FT is that instantiation; IE-AT reduces the factors to spatial attention maps (the
channel mean of their squares) before Eq. 2/3; IE-OD takes OD's distance on rectified factors, Eq. 2 becoming
:math:`\\|\\max(F_{inh}, 0) - \\max(F_T, 0)\\|_2` and Eq. 3 its negative (the paper prints :math:`F_S` where the
teacher's factor :math:`F_T` is meant). Table 6a's metrics are :data:`METRICS`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modules import batchnorm_statistics_fixed
from .base import Context, Method, Update
from .factor import FACTOR_RATIO, RECONSTRUCTIONS, FactorAutoencoder, coder, factor_distance, reconstruction_loss
from .factor import encoded_teacher_feature, trained_autoencoder
from .features import feature_shapes, last_stage, match_size
from .mutual import make_peer

SPLITS = ("random", "natural")
# Table 6a's metrics, each a (similarity for L_inh, dis-similarity for L_exp) pair; see ie_losses.
METRICS = ("l1", "l2", "cos", "partial_l2", "l1_cka")
PAPER_WEIGHT = 50.0  # λ_inh = λ_exp = 50 on CIFAR-10 (§4.2), the best of Table 6b on CIFAR-100


def _unit(x: Tensor) -> Tensor:
    """Each sample flattened and divided by its L2 norm: ``(B, D)``."""
    return F.normalize(x.flatten(1), dim=1)


def _rms(x: Tensor) -> Tensor:
    """:math:`(\\sum x^2 / n)^{1/2}` over all elements (the released ``_factor_transfer`` reduction at p = 2); the
    square root's gradient is kept finite where the distance is 0."""
    return x.pow(2).mean().clamp_min(1e-12).sqrt()


def cka_similarity(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same batch (rows), differentiable:
    :math:`\\langle K_c, L_c\\rangle / (\\|K_c\\|_F \\|L_c\\|_F)` with centred Gram matrices of the flattened rows."""
    x, y = x.flatten(1), y.flatten(1)
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    k, l = x @ x.T, y @ y.T
    return (k * l).sum() / ((k * k).sum() * (l * l).sum()).clamp_min(1e-24).sqrt()


def _similarity(metric: str, a: Tensor, t: Tensor) -> Tensor:
    if metric in ("l1", "l1_cka"):
        return factor_distance(a, t)
    if metric == "l2":
        return _rms(_unit(a) - _unit(t))
    if metric == "cos":
        return (1.0 - (_unit(a) * _unit(t)).sum(1)).mean()
    if metric == "partial_l2":
        return _rms(F.relu(_unit(a)) - F.relu(_unit(t)))
    raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")


def _dissimilarity(metric: str, a: Tensor, t: Tensor) -> Tensor:
    if metric == "cos":
        return (_unit(a) * _unit(t)).sum(1).abs().mean()
    if metric == "l1_cka":
        return cka_similarity(a, t)
    return -_similarity(metric, a, t)


def ie_losses(f_inh: Tensor | None, f_exp: Tensor | None, f_teacher: Tensor,
              metric: str = "l1") -> tuple[Tensor | None, Tensor | None]:
    """``(L_inh, L_exp)`` between the two parts' factors and the teacher's, which is detached here.

    With :math:`n(F) = \\mathrm{vec}(F)/\\|\\mathrm{vec}(F)\\|_2` per sample (Eq. 2's normalisation):

    - ``"l1"`` (Eq. 2 and 3): :math:`L_{inh} = d(F_{inh}, F_T)`, :math:`L_{exp} = -d(F_{exp}, F_T)` with
      :func:`.factor.factor_distance` (the mean absolute difference of the normalised factors, the release's
      reduction);
    - ``"l2"``: the same with :math:`d = (\\mathrm{mean}\\,(n(F) - n(F_T))^2)^{1/2}` (the release's reduction at p = 2);
    - ``"cos"``: :math:`L_{inh} = \\mathrm{mean}(1 - \\cos)`, :math:`L_{exp} = \\mathrm{mean}|\\cos|` (§3.2's cosine
      distance and orthogonality measure);
    - ``"partial_l2"`` (IE-OD, §4.2): :math:`d = (\\mathrm{mean}\\,(\\max(n(F), 0) - \\max(n(F_T), 0))^2)^{1/2}`,
      negated for exploration. The factors are normalised as in Eq. 2–3 (§4.2's formula omits it), which keeps
      :math:`L_{exp}` bounded: an un-normalised negative distance grows without limit;
    - ``"l1_cka"``: Eq. 2 for inheritance, linear CKA over the batch (:func:`cka_similarity`) for exploration.

    Maps of different spatial size meet at the smaller (:func:`.features.match_size`). A part that is None (η = 0
    or 1, Table 5's ends) gives None."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    f_teacher = f_teacher.detach()
    losses = []
    for part, loss in ((f_inh, _similarity), (f_exp, _dissimilarity)):
        if part is None:
            losses.append(None)
            continue
        a, t = match_size(part, f_teacher) if part.dim() == 4 else (part, f_teacher)
        losses.append(loss(metric, a, t))
    return losses[0], losses[1]


def attention_energy(factor: Tensor) -> Tensor:
    """IE-AT's reduction of a factor to its spatial attention map (Zagoruyko & Komodakis, p = 2): the channel mean
    of the squared factor, ``(B, C, H, W) -> (B, 1, H, W)`` (Eq. 2's normalisation follows in :func:`ie_losses`)."""
    return factor.pow(2).mean(dim=1, keepdim=True)


class ChannelSplit(nn.Module):
    """A fixed split of ``channels`` into inheritance (``round(eta * channels)`` of them) and exploration.

    ``mode="random"`` (§4.2) draws a permutation from the torch RNG when built (the run seeds it: fixed per seed);
    ``"natural"`` takes the first channels for inheritance (the release's default). The indices are buffers:
    saved, resumed and returned with the run (``Run.network("split")``)."""

    def __init__(self, channels: int, eta: float = 0.5, mode: str = "random") -> None:
        super().__init__()
        if mode not in SPLITS:
            raise ValueError(f"unknown split {mode!r}; choose one of: {', '.join(SPLITS)}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta (the inheriting share of the channels) must be in [0, 1]; got {eta}")
        inheriting = round(eta * channels)
        order = torch.randperm(channels) if mode == "random" else torch.arange(channels)
        self.register_buffer("inherit", order[:inheriting].sort().values)
        self.register_buffer("explore", order[inheriting:].sort().values)

    def forward(self, feature: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(inheritance part, exploration part)`` of ``(B, C, H, W)``; an empty part is None."""
        return tuple(feature.index_select(1, index) if index.numel() else None
                     for index in (self.inherit, self.explore))


def part_encoders(split: ChannelSplit, factor_channels: int) -> nn.ModuleDict:
    """One :func:`.factor.coder` per non-empty part of ``split``, to ``factor_channels`` (§3.2)."""
    return nn.ModuleDict({name: coder(index.numel(), factor_channels)
                          for name, index in (("inherit", split.inherit), ("explore", split.explore))
                          if index.numel()})


def encode_parts(split: ChannelSplit, encoders: nn.ModuleDict, feature: Tensor) -> tuple[Tensor | None, ...]:
    """``(F_inh, F_exp)``: each part of ``feature`` through its encoder (None for an empty part)."""
    parts = split(feature)
    return tuple(encoders[name](part) if part is not None else None
                 for name, part in zip(("inherit", "explore"), parts))


def _check(eta: float, lambda_inh: float, lambda_exp: float) -> None:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    if lambda_inh < 0 or lambda_exp < 0:
        raise ValueError(f"loss weights must be >= 0; got lambda_inh={lambda_inh}, lambda_exp={lambda_exp}")


class IEKD(Method):
    """IE-KD (Huang et al. §3.2, Eq. 2–4) on the factors of the teacher's auto-encoder: base of IE-FT, IE-AT,
    IE-OD; see the module docstring.

    ``autoencoder``: the teacher's ``"autoencoder"`` part run (its encoder is held frozen); ``eta``: the inheriting
    share of the student's channels; ``split``: ``"random"`` or ``"natural"``; ``lambda_inh``, ``lambda_exp``: 50
    (§4.2, CIFAR-10; Table 6b); ``metric``: one of :data:`METRICS` (Table 6a); ``layer``: the student's split
    feature (default its last stage, :func:`.features.last_stage`). Terms ``"ce"``, ``"inh"``, ``"exp"``
    (weighted). The teacher and its encoder run once per step, without gradient.
    """

    requires_teacher = True
    reduction = "factor"  # IE-AT: "attention"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, autoencoder, eta: float = 0.5,
                 split: str = "random", lambda_inh: float = PAPER_WEIGHT, lambda_exp: float = PAPER_WEIGHT,
                 metric: str = "l1", layer: str | None = None) -> None:
        super().__init__(student, teacher)
        _check(eta, lambda_inh, lambda_exp)
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
        self.eta, self.lambda_inh, self.lambda_exp, self.metric = float(eta), float(lambda_inh), float(lambda_exp), metric
        self.layer = layer or last_stage(student)
        encoder_of_teacher = trained_autoencoder(self, autoencoder, teacher)
        channels = feature_shapes(student, [self.layer])[self.layer][0]
        self.split = ChannelSplit(channels, eta, split)
        self.encoders = part_encoders(self.split, encoder_of_teacher.factor_channels)

    @torch.no_grad()
    def teacher_factor(self, x: Tensor, context: Context | None = None) -> Tensor:
        """:math:`F_T`: the frozen auto-encoder's encoding of the teacher's feature (once per step, or remembered
        per sample when ``context`` allows)."""
        return encoded_teacher_feature(self, x, context)

    def reduce(self, factor: Tensor | None) -> Tensor | None:
        if factor is None or self.reduction == "factor":
            return factor
        return attention_energy(factor)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        if not (context.uses("inh") or context.uses("exp")):
            logits = self.student(x)
            return logits, {"ce": F.cross_entropy(logits, y)}
        logits, features = self.student.forward_features(x)
        f_inh, f_exp = encode_parts(self.split, self.encoders, features[self.layer])
        teacher_factor = self.teacher_factor(x, context)
        l_inh, l_exp = ie_losses(self.reduce(f_inh), self.reduce(f_exp), self.reduce(teacher_factor), self.metric)
        terms = {"ce": F.cross_entropy(logits, y)}
        if l_inh is not None:
            terms["inh"] = self.lambda_inh * l_inh
        if l_exp is not None:
            terms["exp"] = self.lambda_exp * l_exp
        return logits, terms


class IEFT(IEKD):
    """IE-FT (§3.2, §4.2): IE-KD on the factors with Eq. 2–3 (or a Table 6a ``metric``)."""


class IEAT(IEKD):
    """IE-AT (§4.2): "the output factors of the encoders are reduced to spatial attention maps first", then Eq. 2
    and Eq. 3 between the maps (:func:`attention_energy`, then the normalised L1)."""

    reduction = "attention"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, autoencoder, eta: float = 0.5,
                 split: str = "random", lambda_inh: float = PAPER_WEIGHT, lambda_exp: float = PAPER_WEIGHT,
                 layer: str | None = None) -> None:
        super().__init__(student, teacher, autoencoder=autoencoder, eta=eta, split=split, lambda_inh=lambda_inh,
                         lambda_exp=lambda_exp, metric="l1", layer=layer)


class IEOD(IEKD):
    """IE-OD (§4.2): OD's distance on the rectified factors, :math:`L_{inh} = \\|\\max(F_{inh},0) - \\max(F_T,0)\\|_2`,
    :math:`L_{exp}` its negative (metric ``"partial_l2"`` of :func:`ie_losses`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, autoencoder, eta: float = 0.5,
                 split: str = "random", lambda_inh: float = PAPER_WEIGHT, lambda_exp: float = PAPER_WEIGHT,
                 layer: str | None = None) -> None:
        super().__init__(student, teacher, autoencoder=autoencoder, eta=eta, split=split, lambda_inh=lambda_inh,
                         lambda_exp=lambda_exp, metric="partial_l2", layer=layer)


class IEDML(Method):
    """IE-DML (Huang et al. §3.3, Eq. 5–6): deep mutual learning whose KL term is replaced by two IE-KD processes
    in opposite directions — no KL term. Each network regards the other as its teacher:

    :math:`\\mathcal{L}_{\\Theta_1} = \\mathcal{L}_{goal1} + \\lambda_{rec}\\mathcal{L}_{rec1} + \\lambda_{inh}
    \\mathcal{L}_{inh1} + \\lambda_{exp}\\mathcal{L}_{exp1}` and the same for :math:`\\Theta_2`, with
    λ_rec, λ_inh, λ_exp = 0.8, 50, 50 (§4.5).

    Each network has a fixed channel split of its last stage (``split`` for the student, ``peer_split`` for the
    peer), one encoder per part (to the *other* network's factor width) and an auto-encoder of its own last stage
    (``autoencoder``, ``peer_autoencoder``). "Since both networks are trained from scratch, the auto-encoder needs
    to be trained together with the backbone": each network's update trains its backbone, its encoders and its
    auto-encoder (Eq. 1 on its own last stage, detached: the reconstruction trains the auto-encoder, not the
    backbone — our reading). The teacher factor of a network's update is the other network's auto-encoder
    encoding of the other network's features.

    The four steps of §3.3 are the two updates (``"student"`` then ``"peer"``), each with a fresh forward: (a)
    predictions of both, (b) update Θ1, (c) predictions of both again, (d) update Θ2. A network (and its
    auto-encoder) that only provides the target runs without gradient inside
    :func:`kdnb.modules.batchnorm_statistics_fixed`, so each network's BatchNorm statistics advance once per
    step, in its own update. The peer is built as DML's (:func:`.mutual.make_peer`).
    """

    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, peer: str | None = None,
                 eta: float = 0.5, split: str = "random", lambda_rec: float = 0.8,
                 lambda_inh: float = PAPER_WEIGHT, lambda_exp: float = PAPER_WEIGHT, metric: str = "l1",
                 ratio: int = FACTOR_RATIO, reconstruction: str = "l2") -> None:
        super().__init__(student, None)
        if teacher is not None:
            raise ValueError("IE-DML trains its peer alongside the student; it takes no teacher run")
        _check(eta, lambda_inh, lambda_exp)
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
        if reconstruction not in RECONSTRUCTIONS or lambda_rec < 0:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS} and lambda_rec >= 0; got "
                             f"{reconstruction!r}, {lambda_rec}")
        self.peer = make_peer(student, peer, "IE-DML")
        self.lambda_rec, self.lambda_inh, self.lambda_exp = float(lambda_rec), float(lambda_inh), float(lambda_exp)
        self.metric, self.reconstruction = metric, reconstruction
        self.layer, self.peer_layer = last_stage(student), last_stage(self.peer)
        channels = feature_shapes(student, [self.layer])[self.layer][0]
        peer_channels = feature_shapes(self.peer, [self.peer_layer])[self.peer_layer][0]
        self.autoencoder = FactorAutoencoder(channels, ratio, self.layer)
        self.peer_autoencoder = FactorAutoencoder(peer_channels, ratio, self.peer_layer)
        self.split = ChannelSplit(channels, eta, split)
        self.peer_split = ChannelSplit(peer_channels, eta, split)
        self.encoders = part_encoders(self.split, self.peer_autoencoder.factor_channels)
        self.peer_encoders = part_encoders(self.peer_split, self.autoencoder.factor_channels)

    def updates(self) -> list[Update]:
        return [Update("student", ("student", "encoders", "autoencoder")),
                Update("peer", ("peer", "peer_encoders", "peer_autoencoder"))]

    def _side(self, update: str):
        if update == "student":
            return (self.student, self.layer, self.split, self.encoders, self.autoencoder,
                    self.peer, self.peer_layer, self.peer_autoencoder, "")
        return (self.peer, self.peer_layer, self.peer_split, self.peer_encoders, self.peer_autoencoder,
                self.student, self.layer, self.autoencoder, "peer_")

    def update_losses(self, update: str, x: Tensor, y: Tensor,
                      context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        network, layer, split, encoders, own_ae, other, other_layer, other_ae, prefix = self._side(update)
        logits, features = network.forward_features(x)
        feature = features[layer]
        # The other network and its auto-encoder give the target: no gradient, BN statistics untouched.
        with torch.no_grad(), batchnorm_statistics_fixed(other), batchnorm_statistics_fixed(other_ae):
            teacher_factor = other_ae.encoder(other.forward_features(x)[1][other_layer])
        f_inh, f_exp = encode_parts(split, encoders, feature)
        l_inh, l_exp = ie_losses(f_inh, f_exp, teacher_factor, self.metric)
        detached = feature.detach()
        terms = {f"{prefix}ce": F.cross_entropy(logits, y),
                 f"{prefix}rec": self.lambda_rec * reconstruction_loss(detached, own_ae(detached)[1],
                                                                       self.reconstruction)}
        if l_inh is not None:
            terms[f"{prefix}inh"] = self.lambda_inh * l_inh
        if l_exp is not None:
            terms[f"{prefix}exp"] = self.lambda_exp * l_exp
        return logits, terms

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Both losses from the current networks (for inspection; training uses the alternating updates)."""
        logits, terms = self.update_losses("student", x, y)
        return logits, {**terms, **self.update_losses("peer", x, y)[1]}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"": self.student, "peer": self.peer}
