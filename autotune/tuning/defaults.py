"""Defaults of a study's plan (``autotune.tuning.trials.RunPlan``) that the command line shows:
written once here, in a module light enough for `tql-tune --help` (no torch, no Optuna), and
read by ``RunPlan``, ``autotune.api.study_plan`` and ``tql-tune run`` alike."""

from pathlib import Path

RUNS_DIR = Path("runs/studies")  # where trial runs (metrics, checkpoints) go
HEARTBEAT_INTERVAL = 30.0  # seconds between a running trial's heartbeats
GRACE_PERIOD = 120.0  # a running trial with no heartbeat for this long is retried
