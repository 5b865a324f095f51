"""Training one run: data -> agent updates -> logs, evaluations, checkpoints, resume.

Modules, along the loop's ideas:

- ``config``: ``TrainConfig`` (the run's settings, filled from a profile in ``PROFILES``),
  ``TrainResult``, the device, and which settings a resumed run may change (``RESUME_IGNORED``);
- ``hooks``: ``TrainHooks``, the one callback interface through which anything outside
  ``tql`` (the auto-tuner's schedules, controllers and Optuna pruning) drives a run: it
  supplies H̄ per update and sees every log and evaluation;
- ``step_targets``: what a hook gives for an update turned into the update's H̄ tensor, the
  same way in this loop, the population loop and the batched-trials loop;
- ``metrics``: the held-out TD error and the policy's evaluation episodes;
- ``checkpoint``: the run's directory (``config.json``, ``checkpoint.pt``, ``metrics.jsonl``)
  and resuming from it;
- ``loop``: ``Trainer`` and ``train``.

May import: ``tql`` modules, torch, numpy, rich's progress bar; never ``autotune``.
Public names: those below; import them from here.
"""

from tql.trainer.config import (DEFAULT_PROFILE, PROFILES, RESUME_IGNORED, TrainConfig, TrainResult, resolve_device,
                                 set_tf32)
from tql.trainer.hooks import TrainHooks, TrainingDiverged, frozen_target
from tql.trainer.loop import Trainer, load_data, train, warn_on
from tql.trainer.metrics import (VAL_BATCH, eval_record, held_out_draws, held_out_td_error, held_out_td_loss,
                                 make_evaluator, policy_episodes, policy_request)

__all__ = ["DEFAULT_PROFILE", "PROFILES", "RESUME_IGNORED", "TrainConfig", "TrainHooks", "TrainResult", "Trainer",
           "TrainingDiverged", "VAL_BATCH", "eval_record", "frozen_target", "held_out_draws", "held_out_td_error",
           "held_out_td_loss", "load_data", "make_evaluator", "policy_episodes", "policy_request",
           "resolve_device", "set_tf32", "train", "warn_on"]
