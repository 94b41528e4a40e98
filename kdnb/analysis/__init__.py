"""Statistics, result tables and the claim ledger."""
from .claims import (CLAIMS_MIME, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Claim, Ledger,
                     claims_in_notebook, ledger, verdict_for_improvement)
from .stats import PairedComparison, Summary, paired, summarize
from .tables import by_method, paired_by_seed

__all__ = ["Summary", "PairedComparison", "summarize", "paired", "Claim", "Ledger", "ledger",
           "verdict_for_improvement", "claims_in_notebook", "CLAIMS_MIME", "REPRODUCED", "NOT_REPRODUCED",
           "INCONCLUSIVE", "VERDICTS", "by_method", "paired_by_seed"]
