"""Adaptive-H̄ controllers: move rho = H̄ / log n during one training run and record the
schedule actually followed. Each is a ``tql.train.TrainHooks``, the loop's one callback
interface."""

from autotune.controllers.base import Controller
from autotune.controllers.feedback import FeedbackController, FeedbackRule

__all__ = ["Controller", "FeedbackController", "FeedbackRule"]
