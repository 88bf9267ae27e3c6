"""Importance criteria beyond magnitude: BatchNorm scale, first-order Taylor and OBSPA.

Importing this package registers them (``spa`` imports it).
"""

from spa.criteria.batchnorm import BatchNormScaleCriterion
from spa.criteria.obspa import ObspaCriterion
from spa.criteria.taylor import TaylorCriterion

__all__ = ["BatchNormScaleCriterion", "ObspaCriterion", "TaylorCriterion"]
