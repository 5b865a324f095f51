"""Adaptive-H̄ controllers: move rho = H̄ / log n during training and record the schedule
actually followed. Each is a ``tql.trainer.TrainHooks``, the loop's one callback interface:
``feedback`` drives one run, ``population`` (PBT) a population run of ``tql.batched.pbt``;
``base`` holds what they share. How to add one: docs/architecture.md.

May import: ``tql``, ``autotune.schedules``. Public names: below."""

from autotune.controllers.base import Controller, followed_schedule_of, schedule_from_history
from autotune.controllers.feedback import FeedbackController, FeedbackRule
from autotune.controllers.population import PBTRule, PopulationController, train_with_population

__all__ = ["Controller", "followed_schedule_of", "FeedbackController", "FeedbackRule", "PBTRule", "PopulationController",
           "schedule_from_history", "train_with_population"]
