"""Cleaners: score every training stem (higher = keep) without seeing the defect truth."""
from stemsift.clean.base import REGISTRY, Cleaner, CleanerError, StemView, get_cleaner, register
from stemsift.clean import confident, fad, mlp, random_scores, selfrefine, unlearning  # noqa: F401  (fill the registry)

__all__ = ["REGISTRY", "Cleaner", "CleanerError", "StemView", "get_cleaner", "register"]
