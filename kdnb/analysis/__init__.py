"""Statistics, result tables, verdict rules (premises, resolution, family-wise control), the claim ledger, and
representation analyses (CKA, active neurons, sharpness)."""
from .claims import CLAIMS_MIME, Claim, Ledger, claims_in_notebook, judged, ledger
from .representation import (ACTIVE_THRESHOLD, ActiveSubspace, active_neurons, active_subspace, collect_features,
                             feature_matrix, linear_cka, loss_gradients, representation_head)
from .sharpness import SharpnessCurve, noise_generator, noisy_loss
from .stats import PairedComparison, Summary, paired, summarize
from .tables import by_method, paired_by_seed
from .verdicts import (ALPHA, INCONCLUSIVE, MIN_PAIRS, NOT_REPRODUCED, OVERFIT_GAP, PREMISE_UNMET, REPRODUCED,
                       TEACHER_MARGIN, VERDICTS, FamilyCount, Premise, Resolution, all_of, family_count, holm,
                       overfits, p_value, resolution, resolution_note, seeds_to_resolve, teacher_beats_student,
                       verdict_for_all, verdict_for_competitive, verdict_for_competitive_with_all,
                       verdict_for_improvement, verdict_for_most)

__all__ = ["Summary", "PairedComparison", "summarize", "paired", "Claim", "Ledger", "ledger", "judged",
           "claims_in_notebook", "CLAIMS_MIME", "by_method", "paired_by_seed",
           "ALPHA", "MIN_PAIRS", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "PREMISE_UNMET", "VERDICTS",
           "TEACHER_MARGIN", "OVERFIT_GAP", "Premise", "teacher_beats_student", "overfits", "all_of",
           "Resolution", "resolution", "resolution_note", "seeds_to_resolve", "p_value", "holm", "FamilyCount",
           "family_count", "verdict_for_improvement", "verdict_for_all", "verdict_for_most",
           "verdict_for_competitive", "verdict_for_competitive_with_all",
           "ACTIVE_THRESHOLD", "ActiveSubspace", "active_neurons", "active_subspace", "collect_features",
           "feature_matrix", "linear_cka", "loss_gradients", "representation_head", "SharpnessCurve",
           "noise_generator", "noisy_loss"]
