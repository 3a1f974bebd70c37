"""Evaluation: accuracy on whole test sets, model cards, robustness to affine transformations."""

from .accuracy import Evaluation, MultiEvaluation, evaluate, evaluate_multimnist

__all__ = ["Evaluation", "MultiEvaluation", "evaluate", "evaluate_multimnist"]
