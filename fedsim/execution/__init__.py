"""Executors: where client work runs. All give the same outputs, in cohort order."""
from fedsim.execution.sequential import SequentialExecutor

__all__ = ["SequentialExecutor"]
