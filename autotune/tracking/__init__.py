"""Runs and studies mirrored into Weights & Biases and TensorBoard, where researchers watch
them: every record a run appends to ``metrics.jsonl`` goes to the chosen loggers under the
same names, from ``TrainHooks.on_record`` (``tql``'s one seam), so what the tools show equals
the run's own files, which stay the record.

- ``records``: which loggers exist, a record's scalars and the run's config as flat
  hyperparameters (pure functions);
- ``writers``: one writer per tool (TensorBoard event files, an offline-first W&B run); a
  missing extra is one line naming its install command;
- ``loggers``: ``TrackingHooks`` (a run's writers, one per population member; a failing
  writer warns once and the run goes on) and ``RunLabels`` (how runs are grouped).

May import: ``tql``; ``torch.utils.tensorboard`` and ``wandb`` lazily, when a run asks for them.
Public names: ``LOGGERS``, ``check_loggers``, ``usable_loggers``, ``RunLabels``, ``TrackingHooks``, ``tracking_hooks``.
"""

from autotune.tracking.loggers import RunLabels, TrackingHooks, tracking_hooks
from autotune.tracking.records import LOGGERS, check_loggers
from autotune.tracking.writers import usable_loggers

__all__ = ["LOGGERS", "RunLabels", "TrackingHooks", "check_loggers", "tracking_hooks", "usable_loggers"]
