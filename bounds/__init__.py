"""The theory of Song, Lin & Xu (NeurIPS 2025) as checkable conditions on plain numbers.

numpy/scipy only: this package never imports torch or ntkcheck. Each :class:`Condition` is one statement
(its source, LaTeX, status ``stated`` / ``scaling`` / ``derived``, confidence, the quantities it needs);
``evaluate(q)`` returns a :class:`Verdict`. Quantity names: :data:`bounds.quantities.QUANTITIES`.
Derivations of everything marked ``derived``: bounds/DERIVATIONS.md.
"""

from bounds.core import Condition as Condition
from bounds.core import Verdict as Verdict
from bounds.gd import gd_quantities as gd_quantities
from bounds.gd import gd_rate_factor as gd_rate_factor
from bounds.lemmas import lemma_threshold as lemma_threshold
from bounds.local import lambda_max_apriori as lambda_max_apriori
from bounds.local import theorem_d1 as theorem_d1
from bounds.quantities import QUANTITIES as QUANTITIES
from bounds.registry import evaluate_all as evaluate_all
from bounds.registry import get as get
from bounds.registry import registry as registry
from bounds.registry import thresholds as thresholds

__all__ = ["Condition", "Verdict", "registry", "get", "evaluate_all", "thresholds", "QUANTITIES", "gd_quantities",
           "gd_rate_factor", "lemma_threshold", "lambda_max_apriori", "theorem_d1"]
