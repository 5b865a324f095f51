"""The one callback interface through which anything outside ``tql`` drives a run
(``TrainHooks``: H̄ per update, every log and evaluation, population copies, and the run's
records as written, for loggers such as W&B or TensorBoard), and what a run
raises when its numbers stop being finite. ``tql`` itself never imports ``autotune``."""

from __future__ import annotations

from typing import Any

from tql.evaluation import EvalResult


class TrainingDiverged(RuntimeError):
    """A loss or statistic became NaN/inf; the run cannot continue."""

    def __init__(self, step: int, key: str, value: float):
        super().__init__(f"training diverged at step {step}: {key} = {value}")
        self.step, self.key, self.value = step, key, value


class TrainHooks:
    """Callbacks a run calls; subclass and override what you need (all are optional)."""

    def target_entropy(self, step: int, progress: float) -> Any:
        """H̄ in nats for this update (progress = step / total steps); None keeps the run's
        constant. A number, one per layer, or a ``[depth, 2]`` table (``tql.targets``). In a
        population run (``tql.batched.pbt``): a list with one such value per member, or
        one number for all."""
        return None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Called every ``log_every`` steps with host-side metrics."""

    def on_eval(self, step: int, result: EvalResult) -> bool:
        """Called after each evaluation; return True to stop the run now (e.g. pruning)."""
        return False

    def on_start(self, run: dict[str, Any]) -> None:
        """Called once before the first update of this process (a resumed run calls it again):
        ``run`` is the run's ``config.json`` with ``out_dir`` and ``step`` (0, or the
        checkpoint's step). Where a logger opens its run."""

    def on_record(self, record: dict[str, Any]) -> None:
        """Called with every record the run appends to its ``metrics.jsonl`` (``type``: train,
        eval or fitness; a population's train rows name their ``member``), exactly as written,
        so anything that mirrors the file holds the same values."""

    def on_close(self, summary: dict[str, Any] | None) -> None:
        """Called once when the run ends: its ``summary.json``, or None when it stopped with an
        error (diverged, interrupted). Where a logger flushes and closes."""

    def on_population(self, step: int, fitness: list[float]) -> list[tuple[int, int]]:
        """Population runs only: called after each fitness measurement (higher is better,
        -inf for a diverged member); returns the copies to make, as (src, dst) pairs: member
        dst becomes a copy of src (weights, optimiser state, temperatures)."""
        return []

    def state_dict(self) -> dict:
        """State saved in checkpoints so a resumed run continues the same controller."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def frozen_target(value: Any) -> Any:
    """A hashable, comparable copy of a hook's target (number, list, table, array)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(frozen_target(v) for v in value)
    return value
