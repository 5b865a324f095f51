"""`tql-tune compare`'s approaches: every way of setting H̄, run on the same tasks, seeds and step budget.

Approaches (each a way of choosing H̄ for a task without looking at its evaluation runs):

- ``default``: the constant rho = 0.6 (H̄ = 0.6 log n), no tuning;
- ``published``: the paper's per-domain targets per (layer, group) (docs/published.md): its
  manual tuning, counted at zero tuning cost (the paper does not report what it spent);
- ``tuned``: the per-task best constant of a finished Optuna study (``--study``): the paper's
  "manual tuning"; its compute includes every step the study spent on these tasks;
- ``knots``: the per-task best Optuna-learned schedule of a knots study (``--knots-study``);
- ``layers``: the per-task best depth profile (rho of the first and last layer) of a layers
  study (``--layers-study``, a study run with ``studies/layers.toml``);
- ``feedback``: the feedback controller, one run per task and seed, no tuning;
- ``population``: the PBT controller, one population run (4 members, batched) per task and
  seed, no tuning; the best member by held-out TD error is evaluated; its compute counts
  every member's steps;
- ``transfer``: leave-one-domain-out: the schedule pooled from ``--study``'s tasks of the
  other domains; its compute includes those source tasks' study steps (once);
- ``file:NAME=PATH``: any schedule file (e.g. exported with ``tql-tune export``);
- ``off``: the paper's "transformer without TQL": the same critic with the entropy control
  switched off (no penalty, temperatures frozen), so attention is free to collapse; H̄ plays
  no part;
- ``fql``: FQL, the paper's other baseline: its MLP critic (4 x 512) with FQL's optimiser
  settings, the same actor, data and budget; no attention, so no H̄.

The two baselines answer whether H̄ matters at all in a setting: where ``off`` ties with
``default``, no choice of H̄ can be told apart on results either (docs/collapse.md).

Evaluation runs go to ``OUT/runs/<approach>/<task>/seed-<k>``; re-running the command reuses
finished runs (training resumes from checkpoints), so an interrupted comparison loses nothing.

With ``batch`` (``--batch on``; ``auto``: on CUDA) a task's unfinished runs of every approach
but ``population`` (itself a population run) train together as one population
(``tql.batched.batch_runs``, its checkpoint in ``OUT/runs/_batches/<task>/<members' hash>``): each
member computes what its run computes alone, so the numbers are the same, in less wall time on
a GPU. A diverged member stops the comparison as a diverged run does.

With ``workers`` W > 1 (``--workers``; ``auto``: one per core on a CPU) the unfinished runs
train in W processes side by side, each on cores / W threads (one): the same runs with the same
seeds, in less wall time on a CPU (1.61x for 4 runs on 2 cores: benchmarks/speed/README.md,
"Whole studies, one worker per core").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotune.controllers import (FeedbackController, PBTRule, PopulationController, followed_schedule_of,
                                  train_with_population)
from autotune.schedules import Schedule, ScheduleHooks, observed
from autotune.tracking import RunLabels, tracking_hooks, usable_loggers
from autotune.report.data import ComparisonData
from autotune.transfer import leave_one_domain_out, schedule_of_task
from autotune.tuning.trials import objective_value
from tql.errors import ConfigError
from tql.tasks import DEFAULT_RHO, TaskSpec, get_task
from tql.trainer import TrainConfig, TrainHooks, TrainResult, train

BUILTIN = ("default", "published", "tuned", "knots", "layers", "feedback", "population", "transfer", "off", "fql")
# The paper's baselines: their runs' agent settings (AgentConfig fields) beside the plan's own.
BASELINE_AGENTS: dict[str, dict[str, Any]] = {"off": {"entropy_control": False}, "fql": {"critic": "mlp"}}


def batch_runs(value: str, device: str) -> bool:
    """``compare --batch``: on, off, or auto (on for CUDA devices, where it saves wall time)."""
    if value not in ("auto", "on", "off"):
        raise ConfigError(f"--batch {value!r} is not one of: auto, on, off")
    if value == "auto":
        from autotune.tuning.trials import trials_per_batch

        return trials_per_batch("auto", device) > 1
    return value == "on"


@dataclass
class ComparePlan:
    tasks: list[TaskSpec]
    approaches: list[str]
    seeds: list[int]
    out_dir: Path
    profile: str = "smoke"
    study: str | None = None
    knots_study: str | None = None
    layers_study: str | None = None
    storage: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: Path = Path("data")
    device: str = "auto"
    threads: int | None = None
    precision: str = "fp32"  # AgentConfig.precision of every run
    compile: bool | None = None  # AgentConfig.compile (speed only; None: by run length, tql.agent.compile_pays)
    last_k: int = 1
    batch: bool = False  # train a task's runs as one population (tql.batched.batch_runs)
    workers: int = 1  # processes training unfinished runs side by side (autotune.tuning.trials.resolve_workers)
    agent: dict[str, Any] = field(default_factory=dict)  # AgentConfig overrides of every run (--agent)
    log: tuple[str, ...] = ()  # loggers every run is mirrored into (autotune.tracking)
    wandb_project: str | None = None
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        self.log = usable_loggers(self.log)  # a missing extra: one line, before any run
        for name in self.approaches:
            if name not in BUILTIN and not name.startswith("file:"):
                raise ConfigError(f"approach {name!r} is not one of: {', '.join(BUILTIN)}, file:NAME=PATH")
        if len(set(self.approaches)) != len(self.approaches):
            raise ConfigError(f"approaches repeat: {', '.join(self.approaches)}")
        if not self.seeds:
            raise ConfigError("--seeds must be >= 1")
        if {"tuned", "transfer"} & set(self.approaches) and not self.study:
            raise ConfigError("approaches 'tuned' and 'transfer' need --study (a finished constant-rho study)")
        if "knots" in self.approaches and not self.knots_study:
            raise ConfigError("approach 'knots' needs --knots-study (a study run with search.kind = 'knots')")
        if "layers" in self.approaches and not self.layers_study:
            raise ConfigError("approach 'layers' needs --layers-study (a study run with search.kind = 'layers')")

    def observers(self, approach: str, task: TaskSpec, seed: int) -> TrainHooks | None:
        """A run mirrored into ``log`` (None without loggers), grouped by approach and task."""
        labels = RunLabels(project=self.wandb_project, entity=self.wandb_entity, group=f"{approach}/{task.name}",
                           job_type="compare", name=f"{approach}/{task.name}/seed-{seed}", tags=(approach, task.name),
                           config={"approach": approach, "seed": seed, "comparison": str(self.out_dir)})
        return tracking_hooks(self.log, labels)

    def config(self, task: TaskSpec, seed: int, agent: dict[str, Any] | None = None, **overrides) -> TrainConfig:
        """A run's config: the profile, the plan's settings, then ``agent`` (an approach's
        AgentConfig fields, e.g. a baseline's) and ``overrides`` (TrainConfig fields)."""
        return TrainConfig.from_profile(task.name, self.profile,
                                        {"precision": self.precision, "compile": self.compile, **self.agent,
                                         **(agent or {})},
                                        seed=seed,
                                        data_dir=str(self.data_dir), device=self.device, threads=self.threads,
                                        **{**self.train_overrides, **overrides})


@dataclass
class Approach:
    """How one approach sets H̄ for a task, plus the tuning compute it spent."""

    name: str
    hooks_for: Callable[[TaskSpec], Callable[[], TrainHooks | None]]
    tuning_steps: int = 0
    describe: dict[str, str] = field(default_factory=dict)
    population: bool = False  # runs are population runs (tql.batched.pbt)
    config_overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of its runs
    agent_overrides: dict[str, Any] = field(default_factory=dict)  # AgentConfig fields of its runs (baselines)
    ties: list[str] = field(default_factory=list)  # study tasks whose best trial, used here, is a tie
    ties_idle: list[str] = field(default_factory=list)  # ... tied because H̄ never acted in the tied trials


def _summary(plan: ComparePlan, study: str) -> dict[str, Any]:
    from autotune.report.summary import summarize

    return summarize(plan.storage, study)


def _task_summaries(summary: dict[str, Any], tasks: list[TaskSpec]) -> dict[str, dict[str, Any]]:
    by_task = {t["task"]: t for t in summary["tasks"]}
    missing = [t.name for t in tasks if t.name not in by_task]
    if missing:
        raise ConfigError(f"study {summary['study']!r} has no trials for {', '.join(missing)}; "
                          f"run `tql-tune run --study {summary['study']}` on them first")
    return by_task


def _schedule_approach(plan: ComparePlan, name: str, schedules: dict[str, Schedule], tuning_steps: int) -> Approach:
    def hooks_for(task: TaskSpec):
        config = plan.config(task, plan.seeds[0])  # every seed's critic has this depth
        return lambda: ScheduleHooks.for_config(schedules[task.name], config)

    ties, idle = ({task for s in schedules.values() for task in s.meta.get(key, [])} for key in ("ties", "ties_idle"))
    return Approach(name, hooks_for, tuning_steps, {t: s.describe() for t, s in schedules.items()}, ties=sorted(ties),
                    ties_idle=sorted(idle))


def run_config(plan: ComparePlan, approach: Approach, task: TaskSpec, seed: int) -> TrainConfig:
    """The config of one of ``approach``'s runs."""
    return plan.config(task, seed, approach.agent_overrides, **approach.config_overrides)


def build_approach(plan: ComparePlan, name: str) -> Approach:
    if name in BASELINE_AGENTS:
        describe = {"off": "entropy control off", "fql": "FQL's MLP critic"}[name]
        approach = Approach(name, lambda task: (lambda: None), 0, {t.name: describe for t in plan.tasks},
                            agent_overrides=BASELINE_AGENTS[name])
        for task in plan.tasks:  # a bad combination with the plan's --agent fails before any run
            run_config(plan, approach, task, plan.seeds[0])
        return approach
    if name == "default":
        constant = Schedule.constant(DEFAULT_RHO)
        return _schedule_approach(plan, name, {t.name: constant for t in plan.tasks}, 0)
    if name == "published":
        for task in plan.tasks:  # a domain without published targets fails before any run
            plan.config(task, plan.seeds[0], targets="published")
        return Approach(name, lambda task: (lambda: None), 0, {t.name: "published targets" for t in plan.tasks},
                        config_overrides={"targets": "published"})
    if name == "feedback":
        return Approach(name, lambda task: (lambda: FeedbackController(task.n_tokens)), 0,
                        {t.name: "feedback controller" for t in plan.tasks})
    if name == "population":
        return Approach(name, lambda task: (lambda: PopulationController(task.n_tokens, PBTRule())), 0,
                        {t.name: f"population controller ({PBTRule().members} members)" for t in plan.tasks},
                        population=True)
    if name in ("tuned", "knots", "layers"):
        summary = _summary(plan, {"tuned": plan.study, "knots": plan.knots_study, "layers": plan.layers_study}[name])
        by_task = _task_summaries(summary, plan.tasks)
        schedules = {t.name: schedule_of_task(by_task[t.name]) for t in plan.tasks}
        return _schedule_approach(plan, name, schedules, sum(by_task[t.name]["steps_total"] for t in plan.tasks))
    if name == "transfer":
        summary = _summary(plan, plan.study)
        schedules = {t.name: leave_one_domain_out(summary, t.domain) for t in plan.tasks}
        held_out = {t.domain for t in plan.tasks}
        # Source tasks: those that fed at least one target's pooled schedule (counted once).
        sources = [s for s in summary["tasks"] if any(get_task(s["task"]).domain != d for d in held_out)]
        return _schedule_approach(plan, name, schedules, sum(s["steps_total"] for s in sources))
    label, _, path = name.removeprefix("file:").partition("=")
    if not label or not path:
        raise ConfigError(f"approach {name!r}: write file:NAME=PATH")
    schedule = Schedule.load(path)
    return _schedule_approach(plan, name, {t.name: schedule for t in plan.tasks}, 0)


def _finished(out: Path, config: TrainConfig) -> TrainResult | None:
    """The result of a run already finished in ``out`` with this budget (it is not re-run); one
    trained with another agent is refused, not reused or overwritten."""
    summary, config_file = out / "summary.json", out / "config.json"
    if not (summary.is_file() and config_file.is_file()):
        return None
    saved = json.loads(config_file.read_text())["train"]
    before, now = _learning_settings(saved["agent"]), _learning_settings(config.agent.to_dict())
    if before != now:
        changed = ", ".join(f"{k} {before.get(k)} -> {now.get(k)}" for k in sorted(set(before) | set(now))
                            if before.get(k) != now.get(k))
        raise ConfigError(f"{out} holds a run with other agent settings ({changed}); use another --out for this "
                          "comparison")
    result = TrainResult(**json.loads(summary.read_text()))
    same = saved["steps"] == config.steps and saved["seed"] == config.seed and saved["task"] == config.task
    return result if same and result.steps == config.steps and not result.stopped_early else None


def _learning_settings(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent's settings that change what it learns (``compile`` only changes its speed)."""
    return json.loads(json.dumps({k: v for k, v in agent.items() if k != "compile"}, sort_keys=True))


def _train(approach: Approach, config: TrainConfig, out: Path, hooks: TrainHooks | None,
           observers: TrainHooks | None = None) -> TrainResult:
    if approach.population:
        result = train_with_population(config, out, hooks, observers=observers, progress=False)
    else:
        result = train(config, out, observed(hooks, observers), progress=False)
    followed = followed_schedule_of(hooks, result, task=config.task, seed=config.seed)
    if followed is not None:
        followed.save(out / "schedule.json")
    return result


def _finished_progress(evals: list[dict], last_k: int, measure: str = "progress") -> float | None:
    """Mean ``measure`` (progress, or progress gained from the start state) of the last ``last_k``
    evaluations (None: a run that did not grade it)."""
    graded = all(e.get(measure) is not None for e in evals[-last_k:])
    return objective_value(evals, last_k, measure) if graded else None


def _complete(progress: dict[str, dict[str, list]]) -> bool:
    """Every run graded it (runs of an older tql-tune recorded no progress, or no gained progress)."""
    return all(None not in values for by_task in progress.values() for values in by_task.values())


def _graded_curves(curves: dict[str, dict[str, list]]) -> bool:
    """Every evaluation of every run graded its progress."""
    return all(value is not None for by_task in curves.values() for runs in by_task.values() for run in runs
               for _, value in run)


def run_comparison(plan: ComparePlan, on_run: Callable[[str, str, int, float], None] | None = None) -> ComparisonData:
    """Train every (approach, task, seed) and collect successes and compute into ComparisonData."""
    approaches = [build_approach(plan, name) for name in plan.approaches]  # all checks before training
    scores: dict[str, dict[str, list[float]]] = {a.name: {} for a in approaches}
    progress: dict[str, dict[str, list[float]]] = {a.name: {} for a in approaches}
    gained: dict[str, dict[str, list[float]]] = {a.name: {} for a in approaches}
    curves: dict[str, dict[str, list[list[list[float]]]]] = {a.name: {} for a in approaches}
    progress_curves: dict[str, dict[str, list[list[list[float]]]]] = {a.name: {} for a in approaches}
    steps = {a.name: a.tuning_steps for a in approaches}
    collapses: dict[str, dict[str, list]] = {a.name: {} for a in approaches}  # per seed: step of the alarm, or None
    episodes: set[int] = set()
    kinds: set[str] = set()
    batched = _train_batched(plan, approaches) if plan.batch else {}
    in_workers = _train_in_workers(plan, approaches, on_run) if plan.workers > 1 else {}
    for approach in approaches:
        for task in plan.tasks:
            make_hooks = approach.hooks_for(task)
            for seed in plan.seeds:
                out = _run_dir(plan, approach, task, seed)
                config = run_config(plan, approach, task, seed)
                key = (approach.name, task.name, seed)
                result = (batched.get(key) or in_workers.get(key) or _finished(out, config)
                          or _train(approach, config, out, make_hooks(), plan.observers(approach.name, task, seed)))
                value = objective_value(result.evals, plan.last_k)
                scores[approach.name].setdefault(task.name, []).append(value)
                progress[approach.name].setdefault(task.name, []).append(_finished_progress(result.evals, plan.last_k))
                gained[approach.name].setdefault(task.name, []).append(
                    _finished_progress(result.evals, plan.last_k, "gained"))
                curves[approach.name].setdefault(task.name, []).append(
                    [[e["step"], e["success_rate"]] for e in result.evals])
                progress_curves[approach.name].setdefault(task.name, []).append(
                    [[e["step"], e.get("progress")] for e in result.evals])
                steps[approach.name] += result.steps * result.members
                kinds.add(result.data_kind)
                collapse = (result.extra or {}).get("collapse")
                collapses[approach.name].setdefault(task.name, []).append(collapse and collapse["step"])
                episodes.add(sum(e.get("episodes", 0) for e in result.evals[-plan.last_k:]))
                if on_run is not None and key not in in_workers:  # those were heard as they finished
                    on_run(approach.name, task.name, seed, value)
    meta = {"profile": plan.profile, "precision": plan.precision, "seeds": plan.seeds,
            "data_kind": ",".join(sorted(kinds)), "study": plan.study, "knots_study": plan.knots_study,
            "layers_study": plan.layers_study,
            "train_overrides": plan.train_overrides, "agent": plan.agent,
            "schedules": {a.name: a.describe for a in approaches},
            "tuning_steps": {a.name: a.tuning_steps for a in approaches},
            **({"ties": {a.name: a.ties for a in approaches if a.ties}} if any(a.ties for a in approaches) else {}),
            **({"ties_idle": {a.name: a.ties_idle for a in approaches if a.ties_idle}}
               if any(a.ties_idle for a in approaches) else {}),
            **({"progress": progress} if _complete(progress) else {}),
            # progress counted from each episode's start state: what the policy itself did
            **({"gained": gained} if _complete(gained) else {}),
            # episodes behind each score (the last last_k evaluations): what power calculations need
            **({"episodes_per_score": episodes.pop()} if len(episodes) == 1 else {}),
            **({"collapse": collapsed} if (collapsed := _collapsed(collapses)) else {}),
            **({"progress_curves": progress_curves} if _graded_curves(progress_curves) else {})}
    return ComparisonData(approaches=[a.name for a in approaches], tasks=[t.name for t in plan.tasks],
                          scores=scores, steps=steps, meta=meta, curves=curves)


def _collapsed(collapses: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    """The approaches with a run whose collapse alarm went off (per task, per seed: its step or None)."""
    return {a: by_task for a, by_task in collapses.items()
            if any(step is not None for steps in by_task.values() for step in steps)}


def _run_dir(plan: ComparePlan, approach: Approach, task: TaskSpec, seed: int) -> Path:
    return plan.out_dir / "runs" / _safe(approach.name) / task.name / f"seed-{seed}"


def _train_batched(plan: ComparePlan, approaches: list[Approach]) -> dict[tuple[str, str, int], TrainResult]:
    """Each task's unfinished runs (population approaches aside) trained as one population per
    agent: runs whose agents differ (a baseline's critic or control) cannot share a batch."""
    results = {}
    for task in plan.tasks:
        pending: dict[str, list] = {}
        for approach in (a for a in approaches if not a.population):
            make_hooks = approach.hooks_for(task)
            for seed in plan.seeds:
                config = run_config(plan, approach, task, seed)
                out = _run_dir(plan, approach, task, seed)
                if _finished(out, config) is None:
                    agent = json.dumps(config.agent.to_dict(), sort_keys=True)
                    pending.setdefault(agent, []).append((approach.name, seed, config, out, make_hooks()))
        for group in pending.values():
            if len(group) > 1:
                results.update(_train_task_batch(plan, task, group))
    return results


def _train_task_batch(plan: ComparePlan, task: TaskSpec, pending: list) -> dict[tuple[str, str, int], TrainResult]:
    """One task's runs as one population; its folder is named by the member list, so a re-run
    whose finished runs dropped out starts a new batch instead of being refused by the old one."""
    import hashlib

    from tql.batched.batch_runs import BatchMember, train_batch

    members = [BatchMember(config=config, out_dir=out, hooks=observed(hooks, plan.observers(name, task, seed)))
               for name, seed, config, out, hooks in pending]
    key = hashlib.sha1("\n".join(str(out.resolve()) for _, _, _, out, _ in pending).encode()).hexdigest()[:12]
    outcomes = train_batch(members, plan.out_dir / "runs" / "_batches" / task.name / key, progress=False)
    results = {}
    for (name, seed, config, out, hooks), outcome in zip(pending, outcomes):
        if outcome.diverged is not None:
            raise outcome.diverged
        followed = followed_schedule_of(hooks, outcome.result, task=config.task, seed=config.seed)
        if followed is not None:
            followed.save(out / "schedule.json")
        results[(name, task.name, seed)] = outcome.result
    return results


def _pending_runs(plan: ComparePlan, approaches: list[Approach]) -> list[tuple[str, str, int]]:
    """(approach, task, seed) of every run not finished in its folder yet."""
    return [(a.name, task.name, seed) for a in approaches for task in plan.tasks for seed in plan.seeds
            if _finished(_run_dir(plan, a, task, seed), run_config(plan, a, task, seed)) is None]


def _train_in_workers(plan: ComparePlan, approaches: list[Approach], on_run: Callable[[str, str, int, float], None]
                      | None) -> dict[tuple[str, str, int], TrainResult]:
    """The unfinished runs, trained by ``plan.workers`` processes side by side (each on cores /
    workers threads unless ``plan.threads``); ``on_run`` hears each as it finishes. Returns their
    results by (approach, task, seed)."""
    import multiprocessing as mp
    from dataclasses import replace
    from functools import partial

    from tql.data import available_cpus

    pending = _pending_runs(plan, approaches)
    if len(pending) < 2:
        return {}
    child = replace(plan, threads=plan.threads or max(1, available_cpus() // plan.workers))
    results = {}
    # spawn: fresh interpreters, no forked torch/OpenMP or MuJoCo state (as `run --workers`)
    with mp.get_context("spawn").Pool(min(plan.workers, len(pending))) as pool:
        for key, result in pool.imap_unordered(partial(_train_in_worker, child), pending):
            if on_run is not None:
                on_run(*key, objective_value(result.evals, plan.last_k))
            results[key] = result
    return results


# A worker process's approaches, built once each (hooks do not pickle, so a worker builds its
# own; a pool's workers serve one comparison).
_WORKER_APPROACHES: dict[str, Approach] = {}


def _train_in_worker(plan: ComparePlan, key: tuple[str, str, int]) -> tuple[tuple[str, str, int], TrainResult]:
    """One run in a worker process."""
    name, task_name, seed = key
    if name not in _WORKER_APPROACHES:
        _WORKER_APPROACHES[name] = build_approach(plan, name)
    approach, task = _WORKER_APPROACHES[name], get_task(task_name)
    config = run_config(plan, approach, task, seed)
    return key, _train(approach, config, _run_dir(plan, approach, task, seed), approach.hooks_for(task)(),
                       plan.observers(name, task, seed))


def _safe(name: str) -> str:
    return name.replace("/", "_").replace(":", "_").replace("=", "_")
