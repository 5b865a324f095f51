"""One writer per tool, each with the same four calls (``scalars``, ``summary``, ``close``
and the constructor that opens the run), so ``loggers`` treats them alike.

TensorBoard: event files in the run's own folder, beside ``metrics.jsonl`` (a population
member's in ``member-<i>/``), so ``tensorboard --logdir runs`` shows every run under its path.
A resumed run purges the steps it runs again, as ``metrics.jsonl`` is cut back.

W&B: one run per training run (per member), offline unless a login is configured
(``WANDB_API_KEY`` or ``wandb login``) or ``WANDB_MODE`` says otherwise; offline runs are
files under ``<run>/wandb/`` that ``wandb sync`` uploads later. The run id is derived from the
run's folder, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from autotune.tracking.records import check_loggers
from tql.errors import ConfigError

INSTALL = {"wandb": "pip install 'tql-tune[wandb]'", "tensorboard": "pip install 'tql-tune[tensorboard]'"}


def missing_extra(logger: str, exc: ImportError) -> ConfigError:
    """The one line a missing optional dependency gives."""
    return ConfigError(f"--log {logger} needs the {logger} package ({exc.name or exc}): {INSTALL[logger]}")


def require(logger: str) -> None:
    """Fail now, in one line, when ``logger``'s package is not installed (before any training)."""
    try:
        if logger == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        else:
            import wandb  # noqa: F401
    except ImportError as exc:
        raise missing_extra(logger, exc) from None


def usable_loggers(values: Any) -> tuple[str, ...]:
    """``--log`` values checked (``records.check_loggers``) with each logger's package there:
    a bad value or a missing extra is one line, before any work."""
    loggers = check_loggers(values)
    for logger in loggers:
        require(logger)
    return loggers


class TensorBoardWriter:
    """Scalars as TensorBoard events; the configuration as text and as the HParams plugin's
    session, its metrics the evaluation's."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, config: dict[str, Any], step: int, purge: bool = True):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as exc:
            raise missing_extra("tensorboard", exc) from None
        # A resumed run continues after its checkpoint's step: the rows logged after it, before the
        # crash, are purged (a fresh run, step 0, purges an earlier run's events in the folder).
        # purge=False: writers sharing a folder (a study's workers) must not purge each other's.
        purge_step = (step + 1 if step else 0) if purge else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", step)
        plain = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in config.items()}
        self._hparams = hparams(plain, {"eval/success_rate": 0.0, "eval/progress": 0.0})
        for part in self._hparams[:2]:  # the experiment and the session's start; its end at close
            self.writer.file_writer.add_summary(part)

    def scalars(self, step: int | None, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def summary(self, values: dict[str, Any]) -> None:
        self.writer.add_text("summary", "```\n" + json.dumps(values, indent=1, default=str) + "\n```")

    def close(self, failed: bool) -> None:
        self.writer.file_writer.add_summary(self._hparams[2])
        self.writer.flush()
        self.writer.close()


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online with a login configured, offline without one."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "online" if "api.wandb.ai" in netrc.read_text() else "offline"
    except OSError:
        return "offline"


def run_id(folder: Path, key: Any = None) -> str:
    """A W&B run id that a resumed run finds again: from the run's folder (and a member, or
    a worker's host and process)."""
    key = f"{Path(folder).resolve()}#{'' if key is None else key}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


class WandbWriter:
    """One W&B run: the configuration as its config, scalars as history, the summary."""

    name = "wandb"

    def __init__(self, folder: Path, labels: Any, config: dict[str, Any], step: int, member: int | None = None,
                 key: str | None = None):
        try:
            import wandb
        except ImportError as exc:
            raise missing_extra("wandb", exc) from None
        name = labels.name if member is None else f"{labels.name or folder.name}/member-{member}"
        self.run = wandb.init(
            project=labels.project or os.environ.get("WANDB_PROJECT") or "tql-tune",
            entity=labels.entity or os.environ.get("WANDB_ENTITY") or None,
            group=labels.group, job_type=labels.job_type, name=name, tags=list(labels.tags) or None,
            config=config, dir=str(folder), id=run_id(folder, member if key is None else key), resume="allow", mode=wandb_mode(),
            reinit="create_new", settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                                         x_disable_meta=True, save_code=False))

    @property
    def folder(self) -> Path:
        """Where this run's files are (offline: what ``wandb sync`` takes)."""
        return Path(self.run.dir).parent

    @property
    def offline(self) -> bool:
        return bool(self.run.offline)

    def scalars(self, step: int | None, values: dict[str, float]) -> None:
        self.run.log(values, step=step)  # None: W&B's next step

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
