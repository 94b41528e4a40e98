"""Distillation methods: one class per method, looked up by name.

``create("kd", student, teacher, temperature=4, alpha=0.9)``; unknown names raise ``ValueError`` with the
choices. ``bind("kd", {"temperature": 8})`` checks arguments against the method's signature and fills in the
defaults (the run cache does this when a spec is made).
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .attention import AttentionTransfer, attention_loss, attention_map
from .base import Context, Method, Stage, Update
from .born_again import BornAgain
from .contrastive import CRD, ContrastMemory, NegativeSampler, nce_loss
from .dark_knowledge import (CWTM, DKPP, CWTMPermut, CWTMRandom, cwtm_permut_weights, cwtm_random_confidence,
                             cwtm_weights, dkpp_permute, permute_except, teacher_confidence, weighted_cross_entropy)
from .factor import FT, AutoEncoder, FactorAutoencoder, coder, factor_distance, reconstruction_loss
from .fsp import FSP, fsp_loss, fsp_matrix
from .hints import FitNets
from .inheritance import (IEAT, IEDML, IEFT, IEKD, IEOD, ChannelSplit, attention_energy, cka_similarity,
                          ie_losses)
from .introspective import LE, LEPermut, le_targets
from .teacher_free import TfKDReg, TfKDSelf, virtual_teacher
from .overhaul import OD, bn_margin, partial_l2, preact_batchnorm
from .kd import CE, KD, hinton_terms, kd_divergence, soft_targets
from .mimic import Mimic
from .mutual import DML
from .regularizers import ConfidencePenalty, LabelSmoothing, entropy, smoothed_targets
from .activation import AB, NST
from .relational import CC, PKT, RKD, SP
from .variational import VID

METHODS: dict[str, type[Method]] = {"ce": CE, "kd": KD, "dml": DML}
# Part III (Gu et al. 2020, §3): the dissection of dark knowledge.
METHODS.update({"cwtm": CWTM, "cwtm_permut": CWTMPermut, "cwtm_random": CWTMRandom, "dkpp": DKPP})
# Part III (§4-5): introspective learning from the network's own explanations, and its LE-Permut ablation.
METHODS.update({"le": LE, "le_permut": LEPermut})
# Part III (§5.1-5.3) baselines, reused by Part II: regularisers, born-again networks, FitNets, AT, FSP.
METHODS.update({"ls": LabelSmoothing, "cp": ConfidencePenalty, "ban": BornAgain, "hint": FitNets,
                "at": AttentionTransfer, "fsp": FSP})
# Part II (Huang et al. 2021, IE-KD): the teacher's factor auto-encoder (a part run, §3.1) and factor transfer.
METHODS.update({"autoencoder": AutoEncoder, "ft": FT})
# Part II: inheritance and exploration (§3.2, §4.2) and its mutual-learning form (§3.3).
METHODS.update({"ie_ft": IEFT, "ie_at": IEAT, "ie_od": IEOD, "ie_dml": IEDML})
# Part II baselines (Table 1): OD.
METHODS["od"] = OD
# Part II baselines (Table 1): teacher-free KD, self-training (via runs.chain) and the virtual teacher.
METHODS.update({"tfkd_self": TfKDSelf, "tfkd_reg": TfKDReg})
# Part II baselines (Table 1): CRD with its memory bank.
METHODS["crd"] = CRD
# Part I (Cheng et al. 2020, §4.1): mimic one FC layer of the teacher, then freeze it and train the layers above.
METHODS["mimic"] = Mimic
# Part II supplement baselines (Huang et al., supplement Table 1), with RepDistiller's defaults.
METHODS.update({"sp": SP, "cc": CC, "vid": VID, "rkd": RKD, "pkt": PKT, "ab": AB, "nst": NST})

__all__ = ["Context", "Method", "Stage", "Update", "CE", "KD", "DML", "METHODS", "available", "bind", "create", "method_class", "kd_divergence",
           "soft_targets", "CWTM", "CWTMPermut", "CWTMRandom", "DKPP", "teacher_confidence", "cwtm_weights",
           "cwtm_permut_weights", "cwtm_random_confidence", "weighted_cross_entropy", "dkpp_permute",
           "permute_except", "LE", "LEPermut", "le_targets", "LabelSmoothing", "ConfidencePenalty",
           "smoothed_targets", "entropy", "BornAgain", "FitNets", "hinton_terms", "AttentionTransfer",
           "attention_map", "attention_loss", "FSP", "fsp_matrix", "fsp_loss", "AutoEncoder", "FT",
           "FactorAutoencoder", "coder", "factor_distance", "reconstruction_loss", "IEKD", "IEFT", "IEAT", "IEOD",
           "IEDML", "ChannelSplit", "ie_losses", "attention_energy", "cka_similarity", "OD", "bn_margin", "partial_l2",
           "preact_batchnorm", "TfKDSelf", "TfKDReg", "virtual_teacher", "CRD", "ContrastMemory", "NegativeSampler",
           "nce_loss"]


def available() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; unknown names raise ``ValueError`` listing the choices."""
    key = name.lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(available())}")
    return METHODS[key]


def bind(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` checked against method ``name``'s ``__init__`` (after ``student`` and ``teacher``), with
    every default filled in: a typo or a missing required argument is an error that names it."""
    cls = method_class(name)
    accepted = list(inspect.signature(cls.__init__).parameters.values())[3:]  # self, student, teacher
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in accepted):
        raise TypeError(f"method {name!r}: **kwargs/*args in __init__ cannot be bound; name every argument")
    names = [p.name for p in accepted]
    unknown = sorted(set(arguments) - set(names))
    if unknown:
        raise TypeError(f"method {name!r} has no argument {', '.join(map(repr, unknown))}; "
                        f"it takes: {', '.join(names) or 'none'}")
    bound = {}
    for p in accepted:
        if p.name in arguments:
            bound[p.name] = arguments[p.name]
        elif p.default is inspect.Parameter.empty:
            raise TypeError(f"method {name!r} needs argument {p.name!r}")
        else:
            bound[p.name] = p.default
    return bound


def create(name: str, student: nn.Module, teacher: nn.Module | None = None, **hparams) -> Method:
    """Build method ``name`` around ``student`` (and ``teacher`` where the method needs one)."""
    return method_class(name)(student, teacher, **hparams)
