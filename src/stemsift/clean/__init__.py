"""Cleaners: score every training stem (higher = keep) without seeing the defect truth.

Every module of this package is imported here, so a new cleaner is one module with ``@register`` (plus its
params block under ``cleaners:`` in params.yaml); nothing else lists the cleaners."""
import importlib
import pkgutil

from stemsift.clean.base import REGISTRY, Cleaner, CleanerError, StemView, get_cleaner, register

for _m in pkgutil.iter_modules(__path__):  # fill the registry
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "Cleaner", "CleanerError", "StemView", "get_cleaner", "register"]
