"""Parts of a network named by prefix, freezing them, and forward passes that leave BatchNorm alone.

One prefix rule for the whole project (stages, updates, probes, checkpoints): a prefix names a module and its
children, ``name == prefix or name.startswith(prefix + ".")``. So ``"student"`` selects ``student.stem.0.weight``
but not ``student_inherit.weight``; the empty prefix selects everything.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def under(name: str, prefix: str) -> bool:
    """Whether ``name`` is ``prefix`` itself or lies inside it (the project's one prefix rule)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def under_any(name: str, prefixes: Iterable[str]) -> bool:
    return any(under(name, prefix) for prefix in prefixes)


def parameters_under(module: nn.Module, prefixes: Iterable[str]) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of ``module`` under any of ``prefixes``; a prefix that matches nothing is an error
    that lists what the module has (a typo must not silently freeze or probe nothing)."""
    prefixes = tuple(prefixes)
    named = list(module.named_parameters())
    for prefix in prefixes:
        if not any(under(name, prefix) for name, _ in named):
            owners = sorted({name.rsplit(".", 1)[0] for name, _ in named if "." in name})
            raise ValueError(f"prefix {prefix!r} names no parameter; modules with parameters: {', '.join(owners)}")
    return [(name, p) for name, p in named if under_any(name, prefixes)]


class Freeze:
    """Freeze the parts of ``module`` under ``prefixes``: no gradient (``requires_grad_(False)``, ``.grad``
    cleared) and eval mode (BatchNorm running statistics and dropout fixed). :meth:`restore` puts back each
    parameter's ``requires_grad`` and each module's mode as they were.

    ``module.train()`` switches every submodule back to training mode, so whoever calls it (the trainer, at
    each epoch) calls :meth:`hold_eval` after it.
    """

    def __init__(self, module: nn.Module, prefixes: Iterable[str]) -> None:
        prefixes = tuple(prefixes)
        self.parameters = [p for _, p in parameters_under(module, prefixes)] if prefixes else []
        self.modules = [m for name, m in module.named_modules() if prefixes and under_any(name, prefixes)]
        self._grad = [p.requires_grad for p in self.parameters]
        self._mode = [m.training for m in self.modules]
        for p in self.parameters:
            p.requires_grad_(False)
            p.grad = None
        self.hold_eval()

    def hold_eval(self) -> None:
        for m in self.modules:
            m.eval()

    def restore(self) -> None:
        for p, flag in zip(self.parameters, self._grad):
            p.requires_grad_(flag)
        for m, mode in zip(self.modules, self._mode):
            m.train(mode)


@contextlib.contextmanager
def frozen(module: nn.Module, prefixes: Iterable[str]) -> Iterator[Freeze]:
    """``with frozen(net, ["stem"]): ...``: :class:`Freeze` for the duration of the block."""
    freeze = Freeze(module, prefixes)
    try:
        yield freeze
    finally:
        freeze.restore()


@contextlib.contextmanager
def batchnorm_statistics_fixed(module: nn.Module) -> Iterator[None]:
    """A forward pass that leaves BatchNorm running statistics (and ``num_batches_tracked``) untouched.

    The forward itself is unchanged: a module in training mode still normalises with the batch's own
    statistics; it only does not record them. Use it for helper passes, e.g. a peer's prediction in deep
    mutual learning or an explanation target, so that each network's statistics advance once per step.
    """
    switched = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for m in switched:
        # In training mode, BatchNorm with track_running_stats=False normalises by the batch and records nothing.
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True
