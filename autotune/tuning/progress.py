"""Live progress of `tql-tune run`: trials finished per study (read from the storage, so it
counts other workers' and machines' trials too) and the steps of the run in this process."""

from __future__ import annotations

from typing import Any

import optuna

from autotune.tuning.trials import RunPlan, TrialOutcome, study_name
from autotune.tuning.lifecycle import is_counted
from tql.tasks import TaskSpec


class StudyProgress:
    def __init__(self, plan: RunPlan, storage: optuna.storages.BaseStorage, console: Any, enabled: bool = True):
        self.plan, self.storage, self.console, self.enabled = plan, storage, console, enabled
        self.progress = None
        self.steps_per_run = plan.train_config(plan.tasks[0], plan.spec.rho_low, 0).steps

    def __enter__(self) -> "StudyProgress":
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console)
        self.progress.start()
        total = self.plan.trials * len(self.plan.tasks)
        self.trials_bar = self.progress.add_task("trials (all tasks)", total=total, status="")
        self.steps_bar = self.progress.add_task("current run", total=None, status="", visible=self.plan.workers == 1)
        self.refresh()
        return self

    def finished_trials(self) -> int:
        """Counted trials that have ended, over this run's studies (running/queued excluded)."""
        done = 0
        for task in self.plan.tasks:
            try:
                study = optuna.load_study(study_name=study_name(self.plan.study, task.name), storage=self.storage)
            except KeyError:
                continue
            done += sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and is_counted(t))
        return done

    def refresh(self) -> None:
        if self.progress is not None:
            self.progress.update(self.trials_bar, completed=self.finished_trials())

    def task_started(self, task: TaskSpec) -> None:
        if self.progress is not None:
            self.progress.update(self.trials_bar, status=task.name)

    def step(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.steps_bar, completed=step, total=self.steps_per_run)

    def trial_done(self, task: str, outcome: TrialOutcome) -> None:
        value = "-" if outcome.value is None else f"{100 * outcome.value:.0f}%"
        attrs = outcome.attrs
        rho = f"rho={attrs['rho']:.3f}"
        if "rho_first" in attrs:  # a layers trial: its rho is the mean of the two
            rho = f"rho first={attrs['rho_first']:.3f} last={attrs['rho_last']:.3f} (mean {attrs['rho']:.3f})"
        line = f"{task} {rho} H̄={attrs['target_entropy']:.3f}: {outcome.state.name.lower()} {value}"
        if outcome.attrs.get("fail_reason"):
            line += f" ({outcome.attrs['fail_reason']})"
        if self.progress is not None:
            self.progress.console.print(line, highlight=False)
        self.refresh()

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.refresh()
            self.progress.stop()
