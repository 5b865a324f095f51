"""The input of ``tql-tune compare``'s statistics and reports: ``ComparisonData``.

``approaches: list[str]``
    Ordered names of the compared approaches, e.g. ``["default", "tuned", "feedback",
    "population", "transfer"]``. The order is the column/row order of every report.
``tasks: list[str]``
    Ordered OGBench task names.
``scores: dict[str, dict[str, list[float]]]``
    ``approach -> task -> per-seed success rates`` in [0, 1]. Every approach has exactly the
    same tasks, and for a given task every approach has the same number of seeds, listed in
    the same seed order, so run ``scores[a][t][i]`` pairs with ``scores[b][t][i]`` (same task,
    same seed). Different tasks may have different seed counts.
``steps: dict[str, int]``
    Total training steps each approach spent over all tasks and seeds, tuning included
    (an approach that tuned on 50 trials pays for them here).
``curves: dict[str, dict[str, list[list[tuple[int, float]]]]]`` (optional)
    ``approach -> task -> per-seed evaluation curve``, each a list of ``(step, success rate)``
    pairs in the seed order of ``scores``; empty when not recorded (older data files). Read by
    ``autotune.report.curves`` for sample-efficiency curves.
``meta: dict``
    Free-form, JSON-serialisable. The reports read these keys when present: ``command``
    (str, the command line that produced the data), ``profile`` (str), ``seeds``
    (list[int]), ``data_kind`` (``"official"``, ``"generated"``, or a comma-joined mix;
    anything containing ``"generated"`` is flagged as not a real result), ``progress`` and
    ``gained`` (per-seed scores shaped like ``scores``: subtasks done at the episodes' ends,
    and only those the policy changed to done) with ``progress_curves``, ``episodes_per_score``
    and ``collapse``. Other keys are listed verbatim.

``to_dict()`` / ``ComparisonData.from_dict(d)`` round-trip through JSON; ``save(path)`` and
``ComparisonData.load(path)`` do it on a file (written atomically). Construction validates
the shapes and raises ``ConfigError`` (a ``ValueError``) with a one-line message naming the
offending approach/task.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tql.errors import ConfigError
from tql.io import atomic_write_json

# Scores in meta that grade runs that all fail (see ``ComparisonData.graded_data``).
GRADED = ("progress", "gained")


@dataclass
class ComparisonData:
    approaches: list[str]
    tasks: list[str]
    scores: dict[str, dict[str, list[float]]]
    steps: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, list[list[tuple[int, float]]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check shapes and ranges; normalise scores to float lists and steps to ints."""
        _check_names("approach", self.approaches)
        _check_names("task", self.tasks)
        if not isinstance(self.steps, dict):
            raise ConfigError("comparison data: steps must be a mapping approach -> total training steps")
        if not isinstance(self.scores, dict):
            raise ConfigError("comparison data: scores must be a mapping approach -> task -> list of success rates")
        for a in self.scores:
            if a not in self.approaches:
                raise ConfigError(f"comparison data: scores has approach {a!r}, which is not in approaches {self.approaches}")
        for a in self.steps:
            if a not in self.approaches:
                raise ConfigError(f"comparison data: steps has approach {a!r}, which is not in approaches {self.approaches}")
        scores: dict[str, dict[str, list[float]]] = {}
        steps: dict[str, int] = {}
        for a in self.approaches:
            by_task = self.scores.get(a)
            if not isinstance(by_task, dict):
                raise ConfigError(f"comparison data: no scores for approach {a!r}")
            extra = [t for t in by_task if t not in self.tasks]
            if extra:
                raise ConfigError(f"comparison data: approach {a!r} has scores for task {extra[0]!r}, which is not in tasks")
            for t in self.tasks:
                if t not in by_task:
                    raise ConfigError(f"comparison data: approach {a!r} has no scores for task {t!r}")
                values = by_task[t]
                if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                    raise ConfigError(f"comparison data: approach {a!r}, task {t!r}: scores must be a non-empty list of success rates")
                floats = []
                for v in values:
                    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                        raise ConfigError(f"comparison data: approach {a!r}, task {t!r}: score {v!r} is not a success rate in [0, 1]")
                    floats.append(float(v))
                scores.setdefault(a, {})[t] = floats
            if a not in self.steps:
                raise ConfigError(f"comparison data: no training step count for approach {a!r}")
            s = self.steps[a]
            if isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(s) or s < 0 or s != int(s):
                raise ConfigError(f"comparison data: approach {a!r}: steps {s!r} is not a non-negative integer")
            steps[a] = int(s)
        # Own copies, in approach/task order: the caller's dicts are never mutated.
        self.approaches, self.tasks = list(self.approaches), list(self.tasks)
        self.scores, self.steps = scores, steps
        first = self.approaches[0]
        for t in self.tasks:
            n = len(self.scores[first][t])
            for a in self.approaches[1:]:
                if len(self.scores[a][t]) != n:
                    raise ConfigError(
                        f"comparison data: task {t!r}: approach {a!r} has {len(self.scores[a][t])} seeds "
                        f"but {first!r} has {n}; runs must pair by (task, seed)")
        if not isinstance(self.meta, dict):
            raise ConfigError("comparison data: meta must be a mapping")
        self.curves = _checked_curves(self.curves, self.approaches, self.tasks, self.scores)

    def progress_data(self) -> "ComparisonData | None":
        """The same comparison scored by progress (``meta["progress"]``: the mean fraction of each
        task's subtasks done at the episodes' ends), or None when the runs did not record it."""
        return self.graded_data("progress")

    def graded_data(self, measure: str) -> "ComparisonData | None":
        """The same comparison scored by ``measure``: ``progress`` (subtasks done at the episodes'
        ends) or ``gained`` (only those the policy changed to done, counted from each episode's
        start state), with its curves where recorded; None when the runs did not record it."""
        if measure not in GRADED:
            raise ConfigError(f"graded measure {measure!r} is not one of: {', '.join(GRADED)}")
        scores = self.meta.get(measure)
        if not scores:
            return None
        drop = {key for m in GRADED for key in (m, f"{m}_curves")}
        return ComparisonData(approaches=self.approaches, tasks=self.tasks, scores=scores, steps=self.steps,
                              meta={k: v for k, v in self.meta.items() if k not in drop},
                              curves=self.meta.get(f"{measure}_curves") or {})

    def n_seeds(self, task: str) -> int:
        return len(self.scores[self.approaches[0]][task])

    def flat(self, approach: str) -> np.ndarray:
        """All task x seed scores of one approach, task-major, as a float array."""
        return np.concatenate([np.asarray(self.scores[approach][t], float) for t in self.tasks])

    @property
    def generated(self) -> bool:
        """True when the meta says any of the data is generated (synthetic), not official."""
        return "generated" in str(self.meta.get("data_kind", "")).lower()

    def to_dict(self) -> dict[str, Any]:
        return {
            "approaches": list(self.approaches), "tasks": list(self.tasks),
            "scores": {a: {t: list(self.scores[a][t]) for t in self.tasks} for a in self.approaches},
            "steps": {a: self.steps[a] for a in self.approaches}, "meta": dict(self.meta),
            **({"curves": {a: {t: [[list(p) for p in run] for run in self.curves[a][t]] for t in self.tasks}
                           for a in self.approaches}} if self.curves else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ComparisonData":
        if not isinstance(d, dict):
            raise ConfigError("comparison data must be a JSON object with approaches, tasks, scores, steps, meta")
        for key in ("approaches", "tasks", "scores", "steps"):
            if key not in d:
                raise ConfigError(f"comparison data is missing {key!r} (needs approaches, tasks, scores, steps, meta)")
        scores = d["scores"]
        if isinstance(scores, dict):
            scores = {a: (dict(v) if isinstance(v, dict) else v) for a, v in scores.items()}
        steps = dict(d["steps"]) if isinstance(d["steps"], dict) else d["steps"]
        if not isinstance(steps, dict):
            raise ConfigError("comparison data: steps must be a mapping approach -> total training steps")
        return cls(approaches=list(d["approaches"]), tasks=list(d["tasks"]), scores=scores, steps=steps,
                   meta=dict(d.get("meta") or {}), curves=d.get("curves") or {})

    def save(self, path: str | Path, derived: dict[str, Any] | None = None) -> None:
        """Write ``to_dict()`` (plus, under ``"derived"``, statistics computed from it, e.g.
        ``autotune.report.curves.rliable_summary``; ``load`` ignores them) atomically."""
        atomic_write_json(path, {**self.to_dict(), **({"derived": derived} if derived else {})})

    @classmethod
    def load(cls, path: str | Path) -> "ComparisonData":
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"comparison data file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"comparison data file {str(path)!r} is not valid JSON: {e}") from None
        return cls.from_dict(raw)


def _checked_curves(curves: Any, approaches: list[str], tasks: list[str],
                    scores: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[list[tuple[int, float]]]]]:
    """Evaluation curves shaped like ``scores`` (one per run), as (int step, float success) pairs."""
    if not curves:
        return {}
    if not isinstance(curves, dict):
        raise ConfigError("comparison data: curves must be a mapping approach -> task -> per-seed curves")
    out: dict[str, dict[str, list[list[tuple[int, float]]]]] = {}
    for a in approaches:
        for t in tasks:
            runs = (curves.get(a) or {}).get(t) if isinstance(curves.get(a), dict) else None
            if not isinstance(runs, list) or len(runs) != len(scores[a][t]):
                raise ConfigError(f"comparison data: approach {a!r}, task {t!r}: curves must hold one evaluation "
                                  f"curve per seed ({len(scores[a][t])})")
            out.setdefault(a, {})[t] = [_checked_curve(run, a, t) for run in runs]
    return out


def _checked_curve(run: Any, approach: str, task: str) -> list[tuple[int, float]]:
    where = f"comparison data: approach {approach!r}, task {task!r}"
    if not isinstance(run, (list, tuple)) or not run:
        raise ConfigError(f"{where}: a curve must be a non-empty list of [step, success rate] pairs")
    points = []
    for point in run:
        step, value = point if isinstance(point, (list, tuple)) and len(point) == 2 else (None, None)
        if not _is_real(step) or not math.isfinite(step) or step != int(step) or step < 0:
            raise ConfigError(f"{where}: curve point {point!r} is not [non-negative step, success rate]")
        if not _is_real(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: curve point {point!r} has a success rate outside [0, 1]")
        points.append((int(step), float(value)))
    return points


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_names(kind: str, names: Any) -> None:
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or len(names) == 0:
        raise ConfigError(f"comparison data: {kind} list must be a non-empty list of names")
    seen: set[str] = set()
    for n in names:
        if not isinstance(n, str) or not n:
            raise ConfigError(f"comparison data: {kind} name {n!r} is not a non-empty string")
        if n in seen:
            raise ConfigError(f"comparison data: {kind} {n!r} is listed twice")
        seen.add(n)
