"""Statistics and the claim ledger."""
from .claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, ledger, verdict_for_improvement
from .stats import PairedComparison, Summary, paired, summarize

__all__ = ["Summary", "PairedComparison", "summarize", "paired", "Claim", "ledger", "verdict_for_improvement",
           "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE"]
