"""Whether a task's dataset, relabelled for it, can teach a critic anything.

A single-task reward is (subtasks achieved) - N. When no transition of the dataset changes
how many subtasks are achieved (say every transition has one cube of two on its target),
the reward is a constant, the critic learns a constant, and its attention has nothing to
attend to: no H̄ can change such a run. This is checked once per task before training,
from the relabelling's own subgoal checks on every transition's state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tql.data.datasets import TaskData, subgoal_successes, task_goal
from tql.tasks import TaskSpec


@dataclass(frozen=True)
class DataSignal:
    """What a task's training transitions hold once relabelled."""

    task: str
    transitions: int
    subtasks: int  # N
    reward_levels: list[int]  # the distinct numbers of subtasks achieved (reward + N), sorted
    success_transitions: int  # transitions with all N subtasks achieved (reward 0)
    subtask_coverage: list[float]  # per subtask, the fraction of transitions with it achieved

    @property
    def has_signal(self) -> bool:
        """The reward takes more than one value."""
        return len(self.reward_levels) > 1

    def verdict(self) -> str:
        """A few words for a table: no signal, or signal (and whether any transition succeeds)."""
        if not self.has_signal:
            return f"no signal for this task: constant reward ({self.reward_levels[0]} of {self.subtasks} done)"
        return "signal" if self.success_transitions else "signal, but no success transition"

    def to_dict(self) -> dict:
        return asdict(self)


def data_signal(task: TaskSpec, data: TaskData) -> DataSignal:
    """``data``'s signal for ``task``, from its training split's states (``data`` loaded with
    ``keep_info=True``)."""
    achieved = subgoal_successes(task_goal(task.env_name), data.train)  # [transitions, N]
    counts = achieved.sum(axis=1)
    return DataSignal(task=task.name, transitions=int(len(achieved)), subtasks=int(achieved.shape[1]),
                      reward_levels=sorted(int(c) for c in np.unique(counts)),
                      success_transitions=int(achieved.all(axis=1).sum()),
                      subtask_coverage=[float(x) for x in achieved.mean(axis=0)])
