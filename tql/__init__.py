"""Transformer Q-Learning (TQL) on OGBench: model, entropy control, agent, data, evaluation.

This package knows nothing about Optuna or auto-tuning; ``autotune`` drives it through
``tql.train.TrainHooks``.
"""

__version__ = "0.1.0"
