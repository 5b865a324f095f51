"""The Python API: what `tql-tune run`, `show`, `export`, `train`, `apply`, `attention`,
`data make`, `compare`, `lodo` and `experiment` do, with the same defaults, callable from a
script or a notebook. The CLI (``autotune.cli``) parses its options,
calls these and draws the terminal; nothing else happens there.

Messages go to ``say``, one line at a time, some with rich markup (a rich console's ``print``
renders it; plain ``print`` shows the tags); ``None`` keeps a function quiet. Bad input raises
``tql.errors.TQLError`` naming the bad value, before any work is written.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.tuning.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR
from autotune.tuning.shipped import DEFAULT_EXPERIMENT
from autotune.tuning.trials import DEFAULT_STUDY
from tql.errors import TQLError

Say = Callable[[str], None]


def _quiet(text: str) -> None:
    pass


def _option_list(agent: Sequence[str] | dict[str, Any], sharing: str | None) -> list[str]:
    """``--agent KEY=VALUE`` options (or a dict of them) plus ``--temperature-sharing``."""
    from autotune.agent_options import with_sharing

    return with_sharing([f"{k}={v}" for k, v in agent.items()] if isinstance(agent, dict) else list(agent), sharing)


def _agent_options(agent: Sequence[str] | dict[str, Any], sharing: str | None = None) -> dict[str, Any]:
    """``--agent`` options and ``--temperature-sharing`` as checked AgentConfig overrides."""
    from autotune.agent_options import agent_overrides

    return agent_overrides("published", _option_list(agent, sharing))


def study_plan(tasks: str = "all", *, study: str = DEFAULT_STUDY, storage: str | None = None,
               trials: int | None = None, seeds: int | None = None, profile: str = "smoke",
               sampler: str | None = None, objective: str | None = None, workers: int | str = "auto",
               batch: str | int = "auto",
               spec: str | Path | None = None, steps: int | None = None, eval_every: int | None = None,
               eval_episodes: int | None = None, data_dir: str | Path = "data", data_kind: str = "auto",
               make_data: bool = True, runs_dir: str | Path = RUNS_DIR, device: str = "auto",
               threads: int | None = None, precision: str = "fp32", cuda_graph: str = "auto",
               compile: bool | None = None, tf32: bool = True, heartbeat_interval: float = HEARTBEAT_INTERVAL,
               grace_period: float = GRACE_PERIOD, agent: Sequence[str] | dict[str, Any] = (),
               temperature_sharing: str | None = None, collapse_alarm: float | None = None):
    """The ``RunPlan`` of `tql-tune run` with these options, checked (a bad override fails here,
    before any study or file is written). The keywords are the command's options; ``agent``
    (``KEY=VALUE`` strings or a dict) changes every trial's agent, e.g. ``alpha_init=0.01``;
    ``temperature_sharing`` too (``layer_group``, ``layer``, ``global``)."""
    from autotune.tuning.spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import resolve_tasks

    study_spec = load_spec(spec)
    if sampler is not None:
        study_spec = study_spec.replace(sampler=sampler)
    if objective is not None:
        study_spec = study_spec.replace(objective=objective)
    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                                       collapse_alarm=collapse_alarm).items() if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    plan = RunPlan(tasks=resolve_tasks(tasks), spec=study_spec, study=study, storage=storage, profile=profile,
                   trials=trials, seeds=seeds, workers=workers, runs_dir=Path(runs_dir), data_dir=Path(data_dir),
                   data_kind=data_kind, make_data=make_data, device=device, threads=threads, precision=precision,
                   compile=compile, train_overrides=overrides, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period, batch=str(batch), agent=_agent_options(agent, temperature_sharing))
    plan.train_config(plan.tasks[0], study_spec.rho_low, 0)
    return plan


def run_studies(tasks: str = "all", *, say: Say | None = None, progress: Callable | None = None,
                **options: Any) -> dict:
    """`tql-tune run`: one Optuna study over H̄ per task, trials run here (``workers`` processes);
    calling it again continues the studies. ``options`` are ``study_plan``'s. ``progress``,
    given ``(plan, storage)``, returns a context manager whose value receives ``task_started``,
    ``step``, ``trial_done`` and ``refresh`` calls (``autotune.tuning.progress.StudyProgress``).
    Returns ``study_summary`` of these tasks, in the order asked."""
    from autotune.forecast import forecast, studies_line
    from autotune.tuning.storage import describe, open_storage
    from autotune.tuning.studies import check_studies, create_studies, data_signals, ensure_data, record_signals

    say = say or _quiet
    plan = study_plan(tasks, **options)
    opened = open_storage(plan.storage)
    check_studies(plan, opened)
    kinds = ensure_data(plan, say=say)
    signals = data_signals(plan)
    silent = [name for name, signal in signals.items() if not signal.has_signal]
    if silent:
        say(f"[yellow]no signal in the data of {len(silent)} of {len(signals)} task(s) (a constant reward once "
            "relabelled): their trials can only tie; the table at the end names them")
    configs = {t.name: plan.train_config(t, plan.spec.rho_high, 0) for t in plan.tasks}
    warning = studies_line(configs, plan.spec.rho_high)
    if warning:
        say(f"[yellow]{warning}")
    record_signals(create_studies(plan, opened), signals,
                   {name: forecast(config, plan.spec.rho_high) for name, config in configs.items()})
    say(f"study {plan.study}: {len(plan.tasks)} task(s) x {plan.trials} trials x {plan.seeds} seed(s), "
        f"profile {plan.profile} ({plan.precision}), sampler {plan.spec.sampler}, "
        f"{'' if plan.spec.objective == 'success' else f'objective {plan.spec.objective}, '}{plan.workers} worker(s)"
        f"{f' x batches of {plan.batch} trials' if plan.batch > 1 else ''}; storage {describe(plan.storage)}; "
        f"data: {', '.join(f'{d} {k}' for d, k in kinds.items())}")
    with (progress(plan, opened) if progress else nullcontext(None)) as watch:
        _work(plan, watch, say)
    return study_summary(plan.study, plan.storage, tasks=[t.name for t in plan.tasks])


def _work(plan, watch: Any, say: Say) -> None:
    """This process's trials (``workers`` 1) or ``workers`` worker processes', to the end."""
    from autotune.tuning.studies import work_all

    hooks = {} if watch is None else dict(on_trial=watch.trial_done, on_step=watch.step, on_task=watch.task_started)
    report = work_all(plan, poll=None if watch is None else watch.refresh, **hooks)
    if report is not None and report.retried_stale:
        say(f"re-queued {report.retried_stale} trial(s) whose workers were lost")


def study_summary(study: str = DEFAULT_STUDY, storage: str | None = None, task: str | None = None,
                  tasks: Sequence[str] | None = None) -> dict:
    """`tql-tune show --json`: per task, the best rho and H̄, success over seeds, trial counts
    and the trials; ``tasks`` keeps those tasks only, in that order."""
    from autotune.report.summary import summarize

    summary = summarize(storage, study, task)
    if tasks is not None:
        order = {name: i for i, name in enumerate(tasks)}
        summary["tasks"] = sorted((t for t in summary["tasks"] if t["task"] in order), key=lambda t: order[t["task"]])
    return summary


def export_schedule(out: str | Path, *, study: str | None = None, storage: str | None = None,
                    task: str | None = None, exclude_domain: str | None = None, runs: Sequence[str | Path] = ()):
    """`tql-tune export`: the best schedule of a study (one task's, or pooled over its tasks,
    optionally leaving a domain out) or of controller runs, written to ``out``. Returns the
    ``Schedule``; its ``meta["ties"]`` names the tasks whose best trial was a tie."""
    from autotune.transfer import pooled, schedule_from_run, study_schedules

    if (study is None) == (not runs):
        raise TQLError("give either --study (with --task or pooling) or --run DIR (one or more)")
    if runs:
        schedules = [schedule_from_run(Path(d)) for d in runs]
    else:
        schedules = study_schedules(study_summary(study, storage), exclude_domain=exclude_domain, only_task=task)
    schedule = schedules[0] if len(schedules) == 1 else pooled(schedules, excluded_domain=exclude_domain)
    schedule.save(Path(out))
    return schedule


def train(task: str, *, profile: str = "cpu", size: str | None = None, critic: str = "tql",
          steps: int | None = None, target_entropy: Any = None, rho: Any = None, targets: str | None = None,
          settings: str = "published", agent: Sequence[str] | dict[str, Any] = (),
          temperature_sharing: str | None = None, entropy_control: bool = True,
          seed: int = 0, out: str | Path | None = None, data_dir: str | Path = "data", data_kind: str = "auto",
          make_data: bool = False, eval_episodes: int | None = None, eval_every: int | None = None,
          eval_workers: int | str = "auto", batch_size: int | None = None, device: str = "auto",
          threads: int | None = None, precision: str = "fp32", cuda_graph: str = "auto",
          compile: bool | None = None, tf32: bool = True, schedule: str | Path | None = None,
          controller: str = "none", members: int | None = None, fitness: str | None = None,
          depth_profile: bool = False, last_layer_offset: float | None = None, fresh: bool = False,
          collapse_alarm: float | None = None, console: Any = None, progress: bool = True):
    """`tql-tune train`: one TQL (or FQL) run, or a population, resumed from ``out`` when it
    holds a checkpoint. H̄ comes from one of ``rho``/``target_entropy`` (a number, one per layer,
    a ``[depth, 2]`` table or the CLI's text forms), ``targets="published"``, a ``schedule``
    file or a ``controller``; a controller's followed schedule is written to
    ``out/schedule.json``. ``agent``: options as ``KEY=VALUE`` strings or a dict. ``console``
    (a rich console) shows the header, the progress bar and warnings. Returns the
    ``TrainResult`` (``summary.json`` holds it too)."""
    from autotune.agent_options import agent_overrides as named_overrides
    from autotune.controllers import followed_schedule_of, train_with_population
    from autotune.forecast import cannot_act, collapse_line, highest_rho
    from autotune.targeting import population_options, profile_options, target_hooks
    from tql.eval_workers import parse_eval_workers
    from tql.targets import parse_targets
    from tql.trainer import TrainConfig
    from tql.trainer import train as train_config

    members, fitness = population_options(controller, members, fitness)
    profile_options(controller, depth_profile, last_layer_offset)
    options = _option_list(agent, temperature_sharing)
    overrides = {"critic": critic, "entropy_control": entropy_control, "precision": precision, "compile": compile,
                 **named_overrides(settings, options)}
    overrides.update({k: v for k, v in dict(size=size, batch_size=batch_size).items() if v is not None})
    rho = parse_targets(rho, "rho") if isinstance(rho, str) else rho
    target_entropy = parse_targets(target_entropy) if isinstance(target_entropy, str) else target_entropy
    config = TrainConfig.from_profile(
        task, profile, overrides, steps=steps, rho=rho, target_entropy=target_entropy, targets=targets, seed=seed,
        data_dir=str(data_dir), data_kind=data_kind, make_data=make_data, eval_episodes=eval_episodes,
        eval_every=eval_every, device=device, threads=threads, cuda_graph=cuda_graph, tf32=tf32,
        eval_workers=parse_eval_workers(str(eval_workers)), collapse_alarm=collapse_alarm)
    out = Path(out) if out is not None else Path("runs") / task / f"{critic}-seed{seed}"
    hooks, target_text = target_hooks(config, schedule, controller, rho, target_entropy, members, targets,
                                      depth_profile, last_layer_offset or 0.0)
    if console is not None:
        console.print(f"[bold]{task}[/] critic={critic} size={config.agent.size} precision={precision} "
                      f"profile={profile} steps={config.steps} H̄: {target_text} "
                      f"(log n = {config.spec.max_entropy:.3f})")
        warning = cannot_act(config, highest_rho(config, hooks))
        if warning:
            console.print(f"[yellow]{warning}", highlight=False)
        measured = collapse_line(config)
        if measured:
            console.print(measured, highlight=False, markup=False)
    if controller == "population":
        result = train_with_population(config, out, hooks, fitness, fresh=fresh, console=console, progress=progress)
    else:
        result = train_config(config, out, hooks=hooks, fresh=fresh, console=console, progress=progress)
    followed = followed_schedule_of(hooks, result, task=task, seed=seed, steps=result.steps)
    if followed is not None:
        path = followed.save(out / "schedule.json")
        if console is not None:
            console.print(f"the {controller} controller's schedule: {followed.describe()} -> {path}")
    return result


def apply(schedule: str | Path, task: str, *, profile: str = "cpu", steps: int | None = None,
          eval_every: int | None = None, eval_episodes: int | None = None, seed: int = 0,
          out: str | Path | None = None, data_dir: str | Path = "data", make_data: bool = False,
          threads: int | None = None, device: str = "auto", precision: str = "fp32", cuda_graph: str = "auto",
          compile: bool | None = None, tf32: bool = True, agent: Sequence[str] | dict[str, Any] = (),
          on_schedule: Callable[[Any, int, int], None] | None = None, console: Any = None, progress: bool = True):
    """`tql-tune apply`: train ``task`` with a schedule found elsewhere (no tuning): H̄ = rho(p) *
    log n of the new task, per layer of its critic. ``on_schedule(schedule, depth, n_tokens)``
    hears what it will follow before training (the CLI draws its per-layer table); ``console``
    shows the header, warnings and the progress bar. Returns the ``TrainResult``."""
    from autotune.agent_options import agent_overrides
    from autotune.forecast import cannot_act, schedule_top
    from autotune.schedules import Schedule, ScheduleHooks
    from autotune.tuning.ties import say_ties
    from tql.trainer import TrainConfig
    from tql.trainer import train as run_training

    loaded = Schedule.load(schedule)
    options = {"precision": precision, "compile": compile, **agent_overrides("published", _option_list(agent, None))}
    config = TrainConfig.from_profile(task, profile, options, steps=steps, seed=seed, data_dir=str(data_dir),
                                      make_data=make_data, device=device, threads=threads, eval_every=eval_every,
                                      eval_episodes=eval_episodes, cuda_graph=cuda_graph, tf32=tf32)
    hooks = ScheduleHooks.for_config(loaded, config)
    if console is not None:
        source_n = loaded.meta.get("n_tokens")
        console.print(f"schedule {loaded.describe()} from {loaded.meta.get('source', schedule)}"
                      f"{f' (n = {source_n})' if source_n else ''} applied to {task} (n = {config.spec.n_tokens}), "
                      f"a depth-{hooks.depth} critic:")
    if on_schedule is not None:
        on_schedule(loaded, hooks.depth, config.spec.n_tokens)
    if console is not None:
        say_ties(console, loaded.meta.get("ties", []))
        warning = cannot_act(config, schedule_top(loaded, config))
        if warning:
            console.print(warning, style="yellow", highlight=False, markup=False)
    out = Path(out) if out is not None else Path("runs") / task / f"apply-seed{seed}"
    return run_training(config, out, hooks=hooks, console=console, progress=progress)


@dataclass
class Attention:
    """What ``attention`` read: the run's attention over training and at its last checkpoint
    (``autotune.report.attention``), and the PNG it wrote (None when asked not to)."""

    history: dict
    png: Path | None


def attention(run_dir: str | Path, *, batch: int = 512, png: bool = True) -> Attention:
    """`tql-tune attention`: per layer and token group, entropy against its target over
    training, the temperature and when the control engaged; at the last checkpoint, the spread
    of per-query entropies and largest weights on ``batch`` transitions of the run's data;
    ``attention.png`` in the run folder unless ``png`` is False."""
    from autotune.report.attention import attention_history, checkpoint_view, write_attention_png
    from tql.errors import ConfigError

    if batch < 1:
        raise ConfigError(f"--batch {batch} must be >= 1")
    history = attention_history(run_dir)
    history["checkpoint"] = checkpoint_view(run_dir, batch)
    return Attention(history, write_attention_png(history, Path(run_dir) / "attention.png") if png else None)


def make_data(names: Sequence[str] | str, *, episodes: int | None = None, episode_length: int = 1001,
              dataset_type: str | None = None, seed: int = 0, dir: str | Path = "data", workers: int | None = None,
              on_dataset: Callable[[Any, dict], None] | None = None, progress: bool = False) -> list:
    """`tql-tune data make`: OGBench-format datasets made with the oracles in the ``ogbench``
    package, one per domain of ``names`` (tasks or domains), written atomically to ``dir``;
    ``workers`` processes collect the episodes (default: every core; the files are the same
    whatever the number). ``on_dataset(paths, meta)`` hears each as it is written. Returns the
    ``(paths, meta)`` pairs."""
    from tql.data import available_cpus, generate_dataset, read_generated_meta
    from tql.tasks import resolve_tasks

    domains = {}
    for name in [names] if isinstance(names, str) else names:
        for task in resolve_tasks(name):
            domains.setdefault(task.domain, task)
    made = []
    for task in domains.values():
        paths = generate_dataset(task, Path(dir), episodes=episodes, episode_length=episode_length, seed=seed,
                                 dataset_type=dataset_type, progress=progress,
                                 workers=available_cpus() if workers is None else workers)
        made.append((paths, read_generated_meta(paths.train)))
        if on_dataset is not None:
            on_dataset(*made[-1])
    return made


@dataclass
class Comparison:
    """What ``compare`` made: the scores (``ComparisonData``), the rliable statistics derived
    from them (curves, profiles, IQM CIs) and the files written."""

    data: Any
    curves: dict
    files: list[Path]


def compare(tasks: str, *, approaches: str | Sequence[str] = "default,tuned,feedback,population,transfer",
            seeds: int = 3, profile: str = "smoke", study: str | None = None, knots_study: str | None = None,
            layers_study: str | None = None, storage: str | None = None, steps: int | None = None,
            eval_every: int | None = None, eval_episodes: int | None = None, out: str | Path = "runs/compare",
            data_dir: str | Path = "data", threads: int | None = None, device: str = "auto",
            precision: str = "fp32", cuda_graph: str = "auto", compile: bool | None = None, tf32: bool = True,
            reps: int = 2000, batch: str = "auto", workers: int | str = "auto",
            on_run: Callable[[str, str, int, float], None] | None = None,
            command: str | None = None, agent: Sequence[str] | dict[str, Any] = (),
            temperature_sharing: str | None = None, collapse_alarm: float | None = None,
            say: Say | None = None) -> Comparison:
    """`tql-tune compare`: every approach to H̄ on the same tasks, unseen seeds (100, 101, ...)
    and budget; finished runs in ``out`` are reused. Writes data.json (scores and the rliable
    statistics), report.md, report.png and report_curves.png to ``out``. ``on_run(approach,
    task, seed, success)`` hears each finished run; ``command`` is recorded in the data.
    ``workers``: processes training the runs side by side (``auto``: one per core on a CPU)."""
    from autotune.approaches import ComparePlan, batch_runs, run_comparison
    from autotune.forecast import studies_line
    from autotune.tuning.trials import resolve_workers
    from tql.tasks import resolve_tasks

    names = [a.strip() for a in approaches.split(",")] if isinstance(approaches, str) else list(approaches)
    task_specs = resolve_tasks(tasks)
    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                                       collapse_alarm=collapse_alarm).items() if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    out = Path(out)
    plan = ComparePlan(tasks=task_specs, approaches=[a for a in names if a], out_dir=out,
                       seeds=[100 + i for i in range(seeds)], profile=profile, study=study,
                       knots_study=knots_study, layers_study=layers_study, storage=storage, train_overrides=overrides,
                       data_dir=Path(data_dir), device=device, threads=threads, precision=precision, compile=compile,
                       batch=batch_runs(batch, device), agent=_agent_options(agent, temperature_sharing),
                       workers=resolve_workers(workers, device, len(names) * len(task_specs) * seeds, threads))
    plan.config(plan.tasks[0], plan.seeds[0])  # bad budgets fail before any run
    warning = studies_line({t.name: plan.config(t, plan.seeds[0]) for t in plan.tasks}, 1.0, runs="runs", end="")
    if warning and say is not None:
        say(f"[yellow]{warning}")
    data = run_comparison(plan, on_run=on_run)
    if command is not None:
        data.meta["command"] = command
    return write_comparison(data, out, reps)


@dataclass
class LeaveOneOut:
    """What ``lodo`` made: the schedule pooled without the held-out domain, its file, the study's
    tasks that tied (H̄ did not change their trials), and the comparison on the held-out tasks."""

    schedule: Any
    schedule_path: Path
    ties: list
    comparison: Comparison


def lodo(holdout: str, *, study: str, storage: str | None = None, seeds: int = 3, profile: str = "smoke",
         steps: int | None = None, eval_every: int | None = None, eval_episodes: int | None = None,
         out: str | Path = "runs/lodo", data_dir: str | Path = "data", threads: int | None = None,
         device: str = "auto", precision: str = "fp32", batch: str = "auto", workers: int | str = "auto",
         reps: int = 2000, on_run: Callable[[str, str, int, float], None] | None = None,
         command: str | None = None, say: Say | None = None) -> LeaveOneOut:
    """`tql-tune lodo`: pool the constant-rho ``study``'s schedules of the other domains (no
    tuning on ``holdout``), save it to ``out/schedule-without-HOLDOUT.json``, then ``compare``
    it (``transfer``) with ``default`` on the held-out domain's tasks."""
    from autotune.report.summary import summarize
    from autotune.transfer import leave_one_domain_out
    from rich.markup import escape

    from autotune.tuning.ties import tie_warning, tied_tasks
    from tql.agent import AgentConfig

    AgentConfig().replace(precision=precision)  # a bad value fails before the schedule is written
    summary = summarize(storage, study)
    schedule = leave_one_domain_out(summary, holdout)
    path = schedule.save(Path(out) / f"schedule-without-{holdout}.json")
    (say or _quiet)(f"learned without {holdout}: {schedule.describe()} from "
                    f"{', '.join(schedule.meta['pooled_from'])} -> {path}")
    ties = tied_tasks(summary, schedule.meta.get("ties", []))
    warning = tie_warning(ties)
    if warning and say is not None:
        say(f"[yellow]{escape(warning)}")
    comparison = compare(holdout, approaches="default,transfer", seeds=seeds, profile=profile, study=study,
                         storage=storage, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes, out=out,
                         data_dir=data_dir, threads=threads, device=device, precision=precision, reps=reps,
                         batch=batch, workers=workers, on_run=on_run, command=command, say=say)
    return LeaveOneOut(schedule, path, ties, comparison)


@dataclass
class Experiment:
    """What ``experiment`` made: its plan (``autotune.experiment.plan.ExperimentPlan``: steps per
    run, phases, estimates), whether it resumed a saved plan, and the comparison (None with
    ``plan_only``)."""

    plan: Any
    resumed: bool
    comparison: Comparison | None


def experiment(spec: str | Path = DEFAULT_EXPERIMENT, *, budget_minutes: float | None = None, dry_run: bool = False,
               plan_only: bool = False, tasks: str | None = None, seeds: int | None = None,
               out: str | Path | None = None, data_dir: str | Path | None = None, device: str = "auto",
               threads: int | None = None, workers: int | str = "auto", reps: int = 2000,
               on_plan: Callable[[Any], None] | None = None,
               on_run: Callable[[str, str, int, float], None] | None = None,
               command: str | None = None, say: Say | None = None) -> Experiment:
    """`tql-tune experiment`: data, the studies the approaches read, then every approach on the
    same tasks, seeds and steps per run, sized to ``budget_minutes`` on this machine (a few
    seconds' probe) or to the spec's reference machine; re-running with the same ``out``
    resumes. ``spec``: a built-in's name or a TOML file. ``on_plan(plan)`` hears the sized plan
    before any training (the CLI draws it); with ``plan_only`` nothing else happens."""
    from autotune.approaches import batch_runs
    from autotune.experiment import plan as ex
    from autotune.experiment.spec import load_experiment
    from autotune.tuning.trials import trials_per_batch
    from tql.trainer.config import resolve_device

    say = say or _quiet
    spec_ = load_experiment(spec)
    if dry_run:
        spec_ = spec_.for_dry_run()
    if tasks is not None:
        spec_ = spec_.replace(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()))
    if seeds is not None:
        spec_ = spec_.replace(seeds=seeds)
    if dry_run and budget_minutes is None:
        budget_minutes = spec_.minutes
    ex.check_budget(budget_minutes)  # every option is checked before the machine is measured
    resolve_device(device)
    out = Path(out) if out is not None else Path("runs/experiment-dry-run" if dry_run else "runs/experiment")
    settings = ex.Settings(out=out, data_dir=Path(data_dir) if data_dir is not None else (
        out / "data" if dry_run else Path("data")), device=device, threads=threads, workers=workers)
    side_by_side = settings.compare_workers(spec_)  # a bad workers value fails here, before any work
    inputs = ex.plan_inputs(spec_, budget_minutes, dry_run, device)
    saved = None if plan_only else ex.saved_plan(out, inputs)
    n_missing = len(ex.missing_domains(spec_, settings.data_dir))
    batching = dict(study_batch=trials_per_batch("auto", device), compare_batched=batch_runs("auto", device))
    if saved is not None:
        plan = ex.replan(spec_, saved, n_missing, **batching)
        say(f"resuming the experiment planned in {out / ex.PLAN_FILE}: {plan.steps} steps per run")
    else:
        here = None
        if budget_minutes is not None:
            from autotune.experiment.probe import probe_machine

            say("measuring this machine (a few seconds"
                f"{f', {side_by_side} runs side by side' if side_by_side > 1 else ''}) ...")
            here = probe_machine(spec_.task_specs()[0], spec_.profile, device, threads, workers=side_by_side)
        plan = ex.plan_experiment(spec_, here, budget_minutes, n_missing, **batching)
    if on_plan is not None:
        on_plan(plan)
    for note in plan.notes:
        say(escape_markup(note))
    if plan_only:
        return Experiment(plan, saved is not None, None)
    record = plan.to_dict(inputs)
    if saved is not None:
        record["measured_minutes"] = saved.get("measured_minutes", {})
    ex.save_plan(out, record)

    def measured(phase: str, minutes: float) -> None:
        record["measured_minutes"][phase] = round(record["measured_minutes"].get(phase, 0.0) + minutes, 2)
        ex.save_plan(out, record)

    data = ex.run_experiment(plan, settings, measured, say=say, on_run=on_run)
    if command is not None:
        data.meta["command"] = command
    data.meta["experiment"] = inputs
    return Experiment(plan, saved is not None, write_comparison(data, out, reps))


def escape_markup(text: str) -> str:
    """``text`` shown as written by a rich console's ``print`` (``say``)."""
    from rich.markup import escape

    return escape(text)


def write_comparison(data: Any, out: str | Path, reps: int = 2000) -> Comparison:
    """A comparison's files in ``out``: data.json with the rliable statistics, report.md,
    report.png and report_curves.png (`compare` and `experiment` write the same)."""
    from autotune.report.comparison import write_markdown, write_png
    from autotune.report.curve_plots import write_curves_png
    from autotune.report.curves import rliable_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = rliable_summary(data, reps=reps)
    progress = data.progress_data()
    if progress is not None and progress.curves:
        curves["progress"] = rliable_summary(progress, reps=reps)
    data.save(out / "data.json", derived=curves)
    files = [write_markdown(data, out / "report.md", reps=reps), write_png(data, out / "report.png", reps=reps),
             write_curves_png(curves, out / "report_curves.png", generated=data.generated)]
    if "progress" in curves:
        files.append(write_curves_png(curves["progress"], out / "report_progress_curves.png",
                                      generated=data.generated, score="progress"))
    return Comparison(data, curves, files + [out / "data.json"])
