"""LE against regularizers, peers and teachers: Gu et al. (2020), §5.1–5.3, Tables 2–5.

This module decides, once, everything the four comparisons are made of:

- the run behind every cell (all built with :func:`.scale.part3`, so the CE and LE students are the very
  runs the other Part III chapters train);
- the paper's hyper-parameter sweeps (:data:`SWEEPS`), the smaller grids the ``smoke`` and ``book`` profiles run
  (:meth:`Sweep.grid`), and the paper's "report the best" selection (:func:`select_best`), done on the first seed
  only and the chosen value then trained on every seed (:func:`run_sweep`);
- the born-again student of each seed (:func:`born_again_student_seed`: its teacher is the CE run of its seed),
  the teacher of Table 5 and the TAKD chains (:func:`teacher`, :func:`takd_chain`);
- the premise each table's claims stand on (:func:`premise`): the CE runs over-fit (Tables 2–4: regularizers,
  and the born-again teachers trained to convergence), the teacher and the assistant lead the CE student
  (Table 5).

The verdict rules themselves (intersection–union and Holm over a family, non-inferiority within a margin) are
:mod:`kdnb.analysis`'s. Nothing here trains at import; :func:`build` trains (or loads) one table for one model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from ... import analysis, runs
from ...analysis import PairedComparison, Premise, paired_by_seed, verdict_for_improvement
from ...profiles import Profile
from ...runs import Run, RunSpec
from . import scale

ACCURACY = "test accuracy (%)"
ERROR = "test error (%)"

# §5.3: "the temperature is set to 4, and lambda = 0.1 for the ... cross-entropy term" in every distillation
# method (KD's alpha weighs the KD term, so alpha = 1 - lambda).
KD_ARGS = {"temperature": 4.0, "alpha": 0.9}
TAKD_ASSISTANT = {"resnet14": "resnet20", "resnet8": "resnet14"}  # §5.3: 26 -> 20 -> 14 and 26 -> 14 -> 8
HINT_LAYER = "stage2"  # §5.3: "the representation of the 2nd layer of ResNet26 as the Hint" (guided: the same)
BAN_CE_WEIGHT = 0.1  # §5.2: BAN+L, "the regularization strength is lambda = 0.1"


# ------------------------------------------------------------------------------------------------ sweeps
@dataclass(frozen=True)
class Sweep:
    """A competitor's hyper-parameter that the paper sweeps, reporting the best value (§5.1, §5.2).

    ``paper`` is the paper's grid and ``paper_best`` the value it reports as best; ``book`` the smaller grid the
    ``book`` profile runs on ResNets (it holds ``paper_best``). ``in_model``: the parameter is a model option
    (dropout), else a method argument. ``fixed``: other method arguments. ``born_again``: the run's teacher is
    the CE run of its seed and the student starts from another initialisation (:func:`born_again_student_seed`).
    ``follows``: the label of another sweep whose selected value this one takes instead of sweeping (BAN+L takes
    BAN's temperature).
    """

    label: str
    method: str
    parameter: str
    paper: tuple[float, ...]
    paper_best: float
    book: tuple[float, ...]
    in_model: bool = False
    fixed: tuple[tuple[str, Any], ...] = ()
    born_again: bool = False
    follows: str | None = None

    def __post_init__(self) -> None:
        for name in ("paper", "book"):
            grid = getattr(self, name)
            if not grid or self.paper_best not in grid:
                raise ValueError(f"sweep {self.label}: the {name} grid {grid} must hold the paper's best "
                                 f"{self.paper_best}")
            if len(set(grid)) != len(grid):
                raise ValueError(f"sweep {self.label}: the {name} grid {grid} repeats a value")

    def grid(self, profile: Profile, model: str) -> tuple[float, ...]:
        """The values ``profile`` runs: the paper's grid at ``paper``; at ``book`` the reduced grid on ResNets and
        the paper's grid on the MLP (a run of it takes seconds); at ``smoke`` the paper's best value alone."""
        if self.follows is not None:
            raise ValueError(f"sweep {self.label} is not swept: it takes the value chosen for {self.follows}")
        if profile.name == "paper" or (profile.name == "book" and model.startswith("mlp")):
            return self.paper
        if profile.name == "book":
            return self.book
        return (self.paper_best,)

    def spec(self, profile: Profile, model: str, value: float, seed: int) -> RunSpec:
        """The run of ``model`` with this sweep's parameter at ``value``, seed ``seed``."""
        method_args = dict(self.fixed)
        model_args = {}
        if self.in_model:
            model_args[self.parameter] = value
        else:
            method_args[self.parameter] = value
        if self.born_again:
            return scale.part3(profile, model, self.method, born_again_student_seed(seed), method_args=method_args,
                                 teacher=ce(profile, model, seed), model_args=model_args, subset_seed=seed)
        return scale.part3(profile, model, self.method, seed, method_args=method_args, model_args=model_args)


SWEEPS: dict[str, Sweep] = {s.label: s for s in (
    # §5.1: "we drop neurons of the last layer of each block-layer with the drop rate in the range
    # [0.1, 0.25, 0.5, 0.75], where 0.1 corresponds to the best performance" (CE with dropout in the model).
    Sweep("Dropout", "ce", "dropout", (0.1, 0.25, 0.5, 0.75), 0.1, (0.1, 0.5), in_model=True),
    # "For LS, we vary the smoothing factor over [0.6, 0.7, 0.8, 0.9], where a factor of 0.9 turns out to be the best."
    Sweep("LS", "ls", "alpha", (0.6, 0.7, 0.8, 0.9), 0.9, (0.7, 0.9)),
    # "For CP, we vary the penalty strength over [0.1, ..., 8.0], where the value of 0.5 gives the best result."
    Sweep("CP", "cp", "beta", (0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0), 0.5, (0.5, 2.0)),
    # §5.2: born-again network from a CE network of the same model, "temperature in the range of [1, 2, 5, 10,
    # 20]" (the paper names no best; 1 is BAN's own setting).
    Sweep("BAN", "ban", "temperature", (1.0, 2.0, 5.0, 10.0, 20.0), 1.0, (1.0, 5.0),
          fixed=(("ce_weight", 0.0),), born_again=True),
    # BAN+L: the same with a cross-entropy term of weight 0.1, at the temperature chosen for BAN.
    Sweep("BAN+L", "ban", "temperature", (1.0, 2.0, 5.0, 10.0, 20.0), 1.0, (1.0, 5.0),
          fixed=(("ce_weight", BAN_CE_WEIGHT),), born_again=True, follows="BAN"),
)}


def select_best(scores: Mapping[float, float]) -> float:
    """The value with the highest score, as the paper reports "the best" of a sweep. A tie goes to the value
    listed first (the grid's order), so the choice is deterministic; a NaN score is an error."""
    if not scores:
        raise ValueError("no scores to select from")
    bad = [v for v, s in scores.items() if s is None or math.isnan(s)]
    if bad:
        raise ValueError(f"no score for value(s) {bad}")
    best_value, best_score = None, -math.inf
    for value, score in scores.items():
        if score > best_score:  # strictly greater: an equal score later in the grid does not replace
            best_value, best_score = value, score
    return best_value


def selection_seed(profile: Profile) -> int:
    """The seed the sweeps are run and selected on: the first of :func:`seeds`."""
    return seeds(profile)[0]


@dataclass
class SweepResult:
    """A sweep at one profile for one model: the selection seed's accuracy per value, the chosen value, the
    runs of that value on every seed (``{seed: Run}``) and their accuracies (``{seed: %}``)."""

    sweep: Sweep
    model: str
    seed: int
    scores: dict[float, float]
    best: float
    runs: dict[int, Run] = field(repr=False)
    accuracies: dict[int, float] = field(default_factory=dict)

    def optimism(self) -> float:
        """The chosen value's accuracy on the selection seed minus its mean on the other seeds (NaN with one
        seed): how much the seed it was picked on flatters the winner of a sweep."""
        others = [acc for seed, acc in self.accuracies.items() if seed != self.seed]
        return self.scores[self.best] - sum(others) / len(others) if others else math.nan

    def frame(self) -> pd.DataFrame:
        """One row per grid value: the selection seed's accuracy and whether it was chosen."""
        return pd.DataFrame([{"method": self.sweep.label, "parameter": self.sweep.parameter, "value": value,
                              f"{ACCURACY}, seed {self.seed}": score, "chosen": value == self.best}
                             for value, score in self.scores.items()])


def seeds(profile: Profile) -> tuple[int, ...]:
    """The seeds every table of this chapter runs (:func:`.scale.part3_seeds`)."""
    return scale.part3_seeds(profile)


def accuracy(run: Run, profile: Profile) -> float:
    """A run's final test accuracy in percent, on Part III's evaluation set at ``profile``
    (:func:`.scale.part3_test_accuracy`)."""
    return scale.part3_test_accuracy(run, profile)


Measure = Callable[[Run], float]


def run_sweep(profile: Profile, sweep: Sweep, model: str, value: float | None = None,
              train: Callable[[RunSpec], Run] | None = None, measure: Measure | None = None) -> SweepResult:
    """Train ``sweep``'s grid on the selection seed, select the best (:func:`select_best`), then train that value
    on every seed of :func:`seeds`. ``value`` skips the sweep and trains that value (a sweep that ``follows``
    another must be given one). ``train``: how a spec becomes a run (default :func:`kdnb.runs.train_or_load`);
    ``measure``: a run's accuracy in percent (default :func:`accuracy` at ``profile``)."""
    train = train or runs.train_or_load
    measure = measure or (lambda run: accuracy(run, profile))
    seed = selection_seed(profile)
    if value is None:
        scores = {v: measure(train(sweep.spec(profile, model, v, seed))) for v in sweep.grid(profile, model)}
        value = select_best(scores)
    else:
        scores = {value: measure(train(sweep.spec(profile, model, value, seed)))}
    chosen = {s: train(sweep.spec(profile, model, value, s)) for s in seeds(profile)}
    return SweepResult(sweep, model, seed, scores, value, chosen, {s: measure(r) for s, r in chosen.items()})


# ------------------------------------------------------------------------------------------------ the runs
def ce(profile: Profile, model: str, seed: int) -> RunSpec:
    """The cross-entropy student shared by Part III."""
    return scale.part3(profile, model, "ce", seed)


def le_explanation(model: str) -> str:
    """Grad-CAM for the ResNets (§5: "the last convolutional layer"); Grad for the MLP (§5.1: "Grad-CAM is only
    specific for CNNs")."""
    return "grad" if model.startswith("mlp") else "gradcam"


def le_label(model: str) -> str:
    return "LE(Grad)" if le_explanation(model) == "grad" else "LE(Grad-CAM)"


def le(profile: Profile, model: str, seed: int) -> RunSpec:
    """The LE student shared by Part III: Grad-CAM at the method's defaults; ``{"explanation": "grad"}`` for the
    MLP."""
    args = {"explanation": "grad"} if le_explanation(model) == "grad" else None
    return scale.part3(profile, model, "le", seed, method_args=args)


def dml(profile: Profile, model: str, seed: int) -> RunSpec:
    """Deep mutual learning with a peer of the same model, KL weight λ = 0.1 as Gu et al. write (§5.2)."""
    return scale.part3(profile, model, "dml", seed, method_args={"weight": 0.1})


#: Added to a seed to give the born-again student of that seed its own initialisation and batches.
BORN_AGAIN_SEED_OFFSET = 1000


def born_again_student_seed(seed: int) -> int:
    """The run seed (initialisation and batches) of the born-again student of pair ``seed``. Its teacher is the
    CE run of ``seed`` — the CE column of the same table, trained on the same subset to the end of its schedule,
    as the paper's BAN learns from its CE ResNet — and the student, trained on that subset too, starts "from
    scratch" (§5.2): from another initialisation than its teacher's, with other batches."""
    return BORN_AGAIN_SEED_OFFSET + seed


def teacher(profile: Profile) -> RunSpec:
    """The teacher of Table 5, trained once (:func:`.scale.part3_teacher` for ResNets): the paper's
    ResNet-26 at ``paper``, Part 0's teacher below it (ten times the students' data)."""
    return scale.part3_teacher(profile, "resnet")


def distilled(profile: Profile, model: str, method: str, seed: int, extra: Mapping | None = None) -> RunSpec:
    """``model`` distilled from Table 5's teacher with ``method`` at T = 4, lambda = 0.1 (§5.3)."""
    return scale.part3(profile, model, method, seed, method_args={**KD_ARGS, **(extra or {})},
                         teacher=teacher(profile))


def takd_chain(profile: Profile, model: str, seed: int) -> list[RunSpec]:
    """TAKD (§5.3): teacher → assistant → ``model``, Hinton's KD at both links. The assistant, like the
    teacher, is trained once (the first of :func:`seeds`, on that seed's subset); the student varies with
    ``seed``."""
    if model not in TAKD_ASSISTANT:
        raise ValueError(f"no TAKD assistant for {model!r}; the paper has: {', '.join(TAKD_ASSISTANT)}")
    first = seeds(profile)[0]
    return runs.chain(teacher(profile),
                      scale.part3(profile, TAKD_ASSISTANT[model], "kd", first, method_args=KD_ARGS),
                      scale.part3(profile, model, "kd", seed, method_args=KD_ARGS))


def teacher_runs(profile: Profile, model: str, seed: int) -> dict[str, RunSpec]:
    """Table 5's students of ``seed``: KD, Hint, AT+KD, FSP+KD and TAKD from the teacher."""
    return {"KD": distilled(profile, model, "kd", seed),
            "Hint": distilled(profile, model, "hint", seed, {"hint_layer": HINT_LAYER}),
            "AT_Hinton": distilled(profile, model, "at", seed),
            "FSP_Hinton": distilled(profile, model, "fsp", seed),
            "TAKD": takd_chain(profile, model, seed)[-1]}


# ------------------------------------------------------------------------------------------------ the tables
@dataclass(frozen=True)
class Table:
    """One of the paper's tables: which runs make it, in which order, and the paper's figures.

    ``fixed(profile, model, seed)`` gives the runs of one seed that are not swept (``{label: RunSpec}``);
    ``sweeps`` names entries of :data:`SWEEPS`; ``paper`` maps a model to ``{label: the paper's figure}``;
    ``value`` is the column the paper reports (accuracy, or error for Table 3)."""

    number: int
    title: str
    fixed: Callable[[Profile, str, int], dict[str, RunSpec]]
    sweeps: tuple[str, ...]
    order: Callable[[str], tuple[str, ...]]
    paper: Mapping[str, Mapping[str, str]]
    value: str = ACCURACY
    paper_models: tuple[str, ...] = ("resnet14", "resnet8")
    book_models: tuple[str, ...] = ("resnet8",)

    def models(self, profile: Profile) -> tuple[str, ...]:
        """The models this table is run for at ``profile``: the paper's at ``paper``, fewer below (the budget)."""
        return self.paper_models if profile.name == "paper" else self.book_models

    def competitors(self, model: str) -> tuple[str, ...]:
        """Every label except LE's, in the table's order."""
        return tuple(label for label in self.order(model) if label != le_label(model))

    def planned_runs(self, profile: Profile, model: str) -> int:
        """How many distinct runs the table asks for at ``profile`` (its shared CE/LE runs, teachers and
        assistants included, each once): per sweep its grid on the selection seed and the chosen value on the
        other seeds; a sweep that follows another, its one value on every seed."""
        keys: set[str] = set()

        def add(spec: RunSpec | None) -> None:
            while spec is not None:  # the run and every teacher it stands on
                keys.add(spec.key())
                spec = spec.teacher

        for seed in seeds(profile):
            for spec in self.fixed(profile, model, seed).values():
                add(spec)
        for name in self.sweeps:
            sweep = SWEEPS[name]
            values = (sweep.paper_best,) if sweep.follows else sweep.grid(profile, model)
            for value in values:
                add(sweep.spec(profile, model, value, selection_seed(profile)))
            for seed in seeds(profile)[1:]:  # the chosen value (whichever it is) on the other seeds
                add(sweep.spec(profile, model, values[0], seed))
        return len(keys)


def _order(*labels: str) -> Callable[[str], tuple[str, ...]]:
    return lambda model: tuple(le_label(model) if label == "LE" else label for label in labels)


TABLE2 = Table(
    2, "regularizers", lambda p, m, s: {"CE": ce(p, m, s), le_label(m): le(p, m, s)},
    ("Dropout", "LS", "CP"), _order("CE", "Dropout", "LS", "CP", "LE"),
    {"resnet14": dict({"CE": "90.26 ± 0.33", "Dropout": "90.33 ± 0.15", "LS": "90.52 ± 0.12",
                         "CP": "90.42 ± 0.14", "LE(Grad-CAM)": "91.21 ± 0.07"}),
     "resnet8": dict({"CE": "87.95 ± 0.32", "Dropout": "88.02 ± 0.02", "LS": "88.14 ± 0.16",
                        "CP": "88.25 ± 0.13", "LE(Grad-CAM)": "88.70 ± 0.18"})})

TABLE3 = Table(
    3, "regularizers on an MLP", TABLE2.fixed, ("Dropout", "LS", "CP"), _order("CE", "Dropout", "LS", "CP", "LE"),
    {"mlp": dict({"CE": "1.39 ± 0.05", "Dropout": "1.27 ± 0.02", "LS": "1.25 ± 0.02", "CP": "1.18 ± 0.06",
                    "LE(Grad)": "1.10 ± 0.03"})},
    value=ERROR, paper_models=("mlp",), book_models=("mlp",))

TABLE4 = Table(
    4, "peers", lambda p, m, s: {"CE": ce(p, m, s), "DML": dml(p, m, s), le_label(m): le(p, m, s)},
    ("BAN", "BAN+L"), _order("CE", "DML", "BAN", "BAN+L", "LE"),
    {"resnet14": dict({"CE": "90.26 ± 0.33", "DML": "90.39 ± 0.15", "BAN": "90.58 ± 0.15",
                         "BAN+L": "90.83 ± 0.28", "LE(Grad-CAM)": "91.21 ± 0.07"}),
     "resnet8": dict({"CE": "87.95 ± 0.32", "DML": "88.23 ± 0.27", "BAN": "87.22 ± 0.03",
                        "BAN+L": "88.03 ± 0.33", "LE(Grad-CAM)": "88.70 ± 0.18"})})

TABLE5 = Table(
    5, "teachers", lambda p, m, s: {**teacher_runs(p, m, s), le_label(m): le(p, m, s)},
    (), _order("KD", "Hint", "AT_Hinton", "FSP_Hinton", "TAKD", "LE"),
    {"resnet14": dict({"KD": "91.14 ± 0.19", "Hint": "91.29 ± 0.19", "AT_Hinton": "91.31 ± 0.19",
                         "FSP_Hinton": "91.42 ± 0.19", "TAKD": "91.27 ± 0.19", "LE(Grad-CAM)": "91.21 ± 0.07"}),
     "resnet8": dict({"KD": "88.07 ± 0.36", "Hint": "88.52 ± 0.19", "AT_Hinton": "88.15 ± 0.19",
                        "FSP_Hinton": "88.11 ± 0.19", "TAKD": "88.09 ± 0.19", "LE(Grad-CAM)": "88.70 ± 0.18"})})

TABLES: dict[int, Table] = {t.number: t for t in (TABLE2, TABLE3, TABLE4, TABLE5)}
PAPER_TEACHER_ACCURACY = 91.51  # Table 5's caption: the ResNet-26 teacher on CIFAR-10


def table(number: int) -> Table:
    """Table ``number`` (2–5); another number is an error listing the choices."""
    if number not in TABLES:
        raise ValueError(f"no table {number!r}; choose one of: {', '.join(map(str, TABLES))}")
    return TABLES[number]


@dataclass
class Comparison:
    """A table built for one model: one row per (method, seed) in ``frame``, the sweeps behind it, and the runs
    that are not swept (``{(label, seed): Run}``)."""

    table: Table
    model: str
    frame: pd.DataFrame
    sweeps: dict[str, SweepResult]
    runs: dict[tuple[str, int], Run] = field(default_factory=dict, repr=False)

    def sweep_frame(self) -> pd.DataFrame:
        """Every sweep's grid on the selection seed, the chosen value marked."""
        if not self.sweeps:
            return pd.DataFrame()
        return pd.concat([s.frame() for s in self.sweeps.values()], ignore_index=True)

    def chosen(self) -> dict[str, float]:
        return {label: s.best for label, s in self.sweeps.items()}


def _row(label: str, model: str, seed: int, acc: float, setting: str = "") -> dict:
    return {"model": model, "method": label, "seed": seed, ACCURACY: acc, ERROR: 100.0 - acc, "setting": setting}


def build(profile: Profile, number: int, model: str, train: Callable[[RunSpec], Run] | None = None,
          measure: Measure | None = None) -> Comparison:
    """Train (or load from the cache) table ``number`` for ``model`` at ``profile``: the sweeps first (each
    selected on the first seed, its choice trained on every seed), then the runs that are not swept.
    ``train``: how a spec becomes a run (default :func:`kdnb.runs.train_or_load`); ``measure``: a run's accuracy
    in percent (default :func:`accuracy` at ``profile``)."""
    train = train or runs.train_or_load
    measure = measure or (lambda run: accuracy(run, profile))
    spec_table = table(number)
    rows: list[dict] = []
    results: dict[str, SweepResult] = {}
    for name in spec_table.sweeps:
        sweep = SWEEPS[name]
        given = results[sweep.follows].best if sweep.follows else None
        result = run_sweep(profile, sweep, model, value=given, train=train, measure=measure)
        results[name] = result
        rows += [_row(name, model, s, result.accuracies[s], f"{sweep.parameter}={result.best:g}")
                 for s in result.runs]
    trained: dict[tuple[str, int], Run] = {}
    for seed in seeds(profile):
        for label, spec in spec_table.fixed(profile, model, seed).items():
            trained[label, seed] = train(spec)
            rows.append(_row(label, model, seed, measure(trained[label, seed])))
    frame = pd.DataFrame(rows)
    order = {label: i for i, label in enumerate(spec_table.order(model))}
    frame = frame.sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c)
    return Comparison(spec_table, model, frame.reset_index(drop=True), results, trained)


def differences(frame: pd.DataFrame, a: str, others: Sequence[str],
                value: str = ACCURACY) -> dict[str, PairedComparison]:
    """``{b: a − b}`` of ``value``, paired by seed, for each ``b`` of ``others``
    (:func:`kdnb.analysis.paired_by_seed`)."""
    return {b: paired_by_seed(frame, a, b, value=value) for b in others}


# ------------------------------------------------------------------------------------------------ premises
def premise_runs(profile: Profile, number: int, model: str) -> dict[str, list[RunSpec]]:
    """The runs the premise of table ``number`` for ``model`` reads: ``"CE"``, the CE runs of every seed; for
    Table 5 also ``"teacher"`` and ``"assistant"``, the first two links of TAKD's chain."""
    out = {"CE": [ce(profile, model, s) for s in seeds(profile)]}
    if number == 5:
        chain = takd_chain(profile, model, seeds(profile)[0])
        out |= {"teacher": [chain[0]], "assistant": [chain[1]]}
    return out


def premise(profile: Profile, built: Comparison, train: Callable[[RunSpec], Run] | None = None) -> Premise:
    """What the claims of ``built``'s table stand on, measured on its runs (:func:`premise_runs`).

    Tables 2 and 3 (regularizers) and 4 (peers): the CE runs over-fit (:func:`.scale.part3_overfit_premise`)
    — a regularizer has nothing to cure otherwise, and in Table 4 the CE runs are the born-again students'
    teachers, which the paper trains to the end of its schedule. Table 5: the teacher, and TAKD's assistant,
    lead the CE student by :data:`kdnb.analysis.TEACHER_MARGIN` points
    (:func:`.scale.part3_teacher_premise`)."""
    train = train or runs.train_or_load
    model = built.model
    needed = premise_runs(profile, built.table.number, model)
    ce_runs = [built.runs["CE", s] if ("CE", s) in built.runs else train(spec)
               for s, spec in zip(seeds(profile), needed["CE"])]
    if built.table.number in (2, 3):
        return scale.part3_overfit_premise(ce_runs, profile)
    if built.table.number == 4:
        return scale.part3_overfit_premise(ce_runs, profile, what=f"CE {model} (the born-again teachers)")
    return analysis.all_of(scale.part3_teacher_premise(train(needed["teacher"][0]), ce_runs, profile),
                           scale.part3_teacher_premise(train(needed["assistant"][0]), ce_runs, profile,
                                                       what="assistant"))


def chapter_runs(profile: Profile) -> list[RunSpec]:
    """Every run chapter III.3 trains at ``profile``, asked of :func:`build` and :func:`premise_runs` themselves
    (each table for each of its models), in the order they are trained.

    A sweep's value on the seeds after the selection seed is the one chosen on it (:func:`select_best`), known
    only once the sweep's grid is trained: the grid's cached runs are measured, and until the whole grid is
    cached an untrained value stands in (the first of the grid when none is). ``kdnb run --executor`` plans again
    after training, so the chosen value's runs are trained before the chapter executes."""
    asked: list[RunSpec] = []

    def record(spec: RunSpec) -> Run | RunSpec:
        asked.append(spec)
        return runs.finished(spec) or spec

    def measure(run: Run | RunSpec) -> float:
        return accuracy(run, profile) if isinstance(run, Run) else 0.0

    for number, spec_table in TABLES.items():
        for model in spec_table.models(profile):
            build(profile, number, model, train=record, measure=measure)
            asked += [spec for specs in premise_runs(profile, number, model).values() for spec in specs]
    return asked


def paper_mean(number: int, model: str, label: str) -> float:
    """The paper's mean for ``label`` in table ``number`` (``"87.95 ± 0.32"`` → 87.95)."""
    return float(table(number).paper[model][label].split("±")[0])


def paper_effect(number: int, model: str, a: str, b: str) -> float:
    """The paper's ``a − b`` in accuracy points (for Table 3, reported as error, the error of ``b`` minus that
    of ``a``)."""
    sign = -1.0 if table(number).value == ERROR else 1.0
    return sign * (paper_mean(number, model, a) - paper_mean(number, model, b))


def hardest(number: int, model: str, pairs: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Of a family's pairs ``(a, b)``, the one with the smallest paper effect ``|a − b|``: the comparison a family
    claim needs the most seeds for, whose resolution the ledger shows."""
    return min(pairs, key=lambda pair: abs(paper_effect(number, model, *pair)))


def family_claim(number: int, model: str, comparisons: Mapping[tuple[str, str], PairedComparison], verdict: str,
                 **fields: Any) -> analysis.Claim:
    """One ledger row for a claim over the family of pairs ``comparisons`` (``{(a, b): a − b}``) of table
    ``number``: ``verdict`` is the family rule's (:func:`kdnb.analysis.verdict_for_all` and its kin); the
    resolution, the paper's effect and the note are those of the family's hardest pair (:func:`hardest`), with
    the resolution of one test in a family of ``len(comparisons)``. ``fields`` go to
    :func:`kdnb.analysis.judged` (claim, paper, measured, premise, setting, source)."""
    a, b = hardest(number, model, list(comparisons))
    return analysis.judged(comparison=comparisons[a, b], paper_effect=paper_effect(number, model, a, b),
                           verdict=verdict, family=len(comparisons), **fields)


# ------------------------------------------------------------------------------------------------ reporting
def difference_table(comparisons: Mapping[str, PairedComparison], a: str,
                     verdict: Callable[[PairedComparison], str] = verdict_for_improvement) -> pd.DataFrame:
    """One row per competitor ``b``: ``a − b`` (mean ± std, 95% CI, p, n), the pair's resolution
    (:func:`kdnb.analysis.resolution`) and the verdict of ``verdict`` on the pair alone (a claim over several
    pairs has its own rule)."""
    return pd.DataFrame({"paired difference (accuracy points)": [c.format() for c in comparisons.values()],
                         "resolution": [analysis.resolution(c).format() for c in comparisons.values()],
                         "verdict on this pair alone": [verdict(c) for c in comparisons.values()]},
                        index=pd.Index([f"{a} − {b}" for b in comparisons], name="pair"))


def brief(comparisons: Mapping[str, PairedComparison], a: str | None = None) -> str:
    """``"LE − CE +0.52 [-0.31, +1.35]; …"``: each paired mean with its 95% CI, and n once. Keys are the
    competitors of ``a``, or, without ``a``, the pairs' own names (``"Dropout − CE"``)."""
    parts = [f"{b if a is None else f'{a} − {b}'} {c.difference.mean:+.2f} "
             f"[{c.difference.ci_low:+.2f}, {c.difference.ci_high:+.2f}]" for b, c in comparisons.items()]
    n = sorted({c.difference.n for c in comparisons.values()})
    return "; ".join(parts) + f" (points, 95% CI, n={'/'.join(map(str, n))})"


def paper_row(number: int, model: str) -> str:
    """The paper's figures of table ``number`` for ``model``, in the table's order: ``"CE 87.95 ± 0.32, …"``."""
    t = table(number)
    return ", ".join(f"{label} {t.paper[model][label]}" for label in t.order(model))


def ranking(frame: pd.DataFrame, value: str = ACCURACY) -> pd.Series:
    """Mean ``value`` per method, best first (highest accuracy; lowest error)."""
    means = frame.groupby("method", sort=False)[value].mean()
    return means.sort_values(ascending=(value == ERROR), kind="stable")
