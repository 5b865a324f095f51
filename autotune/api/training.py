"""Single runs: `tql-tune train` (``train``), `apply` (``apply``), `attention` (``attention``)
and `data make` (``make_data``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.api.options import option_list


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
          collapse_alarm: float | None = None, log: Sequence[str] = (),
          wandb_project: str | None = None, wandb_entity: str | None = None, console: Any = None,
          progress: bool = True):
    """`tql-tune train`: one TQL (or FQL) run, or a population, resumed from ``out`` when it
    holds a checkpoint. H̄ comes from one of ``rho``/``target_entropy`` (a number, one per layer,
    a ``[depth, 2]`` table or the CLI's text forms), ``targets="published"``, a ``schedule``
    file or a ``controller``; a controller's followed schedule is written to
    ``out/schedule.json``. ``agent``: options as ``KEY=VALUE`` strings or a dict. ``console``
    (a rich console) shows the header, the progress bar and warnings. Returns the
    ``TrainResult`` (``summary.json`` holds it too). ``log``: ``"wandb"`` and/or
    ``"tensorboard"`` mirror the run's records there (``docs/tracking.md``)."""
    from autotune.agent_options import agent_overrides as named_overrides
    from autotune.schedules import observed
    from autotune.tracking import RunLabels, tracking_hooks
    from autotune.controllers import followed_schedule_of, train_with_population
    from autotune.forecast import cannot_act, collapse_line, highest_rho
    from autotune.targeting import population_options, profile_options, target_hooks
    from tql.eval_workers import parse_eval_workers
    from tql.targets import parse_targets
    from tql.trainer import TrainConfig
    from tql.trainer import train as train_config

    members, fitness = population_options(controller, members, fitness)
    profile_options(controller, depth_profile, last_layer_offset)
    options = option_list(agent, temperature_sharing)
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
    warn = (lambda text: console.print(f"[yellow]{text}", highlight=False)) if console is not None else None
    observers = tracking_hooks(log, RunLabels(project=wandb_project, entity=wandb_entity, group=task,
                                              job_type="train", name=out.name), warn)
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
        result = train_with_population(config, out, hooks, fitness, observers, fresh=fresh, console=console,
                                       progress=progress)
    else:
        result = train_config(config, out, hooks=observed(hooks, observers), fresh=fresh, console=console,
                              progress=progress)
    _say_offline(observers, console)
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
          on_schedule: Callable[[Any, int, int], None] | None = None, log: Sequence[str] = (),
          wandb_project: str | None = None, wandb_entity: str | None = None, console: Any = None,
          progress: bool = True):
    """`tql-tune apply`: train ``task`` with a schedule found elsewhere (no tuning): H̄ = rho(p) *
    log n of the new task, per layer of its critic. ``on_schedule(schedule, depth, n_tokens)``
    hears what it will follow before training (the CLI draws its per-layer table); ``console``
    shows the header, warnings and the progress bar; ``log`` mirrors the run into ``wandb``
    and/or ``tensorboard``. Returns the ``TrainResult``."""
    from autotune.agent_options import agent_overrides
    from autotune.forecast import cannot_act, schedule_top
    from autotune.schedules import Schedule, ScheduleHooks, observed
    from autotune.tracking import RunLabels, tracking_hooks
    from autotune.tuning.ties import say_ties
    from tql.trainer import TrainConfig
    from tql.trainer import train as run_training

    loaded = Schedule.load(schedule)
    options = {"precision": precision, "compile": compile, **agent_overrides("published", option_list(agent, None))}
    config = TrainConfig.from_profile(task, profile, options, steps=steps, seed=seed, data_dir=str(data_dir),
                                      make_data=make_data, device=device, threads=threads, eval_every=eval_every,
                                      eval_episodes=eval_episodes, cuda_graph=cuda_graph, tf32=tf32)
    hooks = ScheduleHooks.for_config(loaded, config)
    out = Path(out) if out is not None else Path("runs") / task / f"apply-seed{seed}"
    warn = (lambda text: console.print(f"[yellow]{text}", highlight=False)) if console is not None else None
    observers = tracking_hooks(log, RunLabels(project=wandb_project, entity=wandb_entity, group=task,
                                              job_type="apply", name=out.name,
                                              config={"schedule": loaded.describe()}), warn)
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
    result = run_training(config, out, hooks=observed(hooks, observers), console=console, progress=progress)
    _say_offline(observers, console)
    return result


def _say_offline(observers: Any, console: Any) -> None:
    """Where a run's offline W&B runs are and how to upload them (docs/tracking.md)."""
    runs = getattr(observers, "offline_runs", [])
    if console is not None and runs:
        console.print(f"W&B offline: {len(runs)} run(s) under {runs[0].parent}; upload with `wandb sync "
                      f"{' '.join(str(r) for r in runs)}`", highlight=False, markup=False, soft_wrap=True)


@dataclass
class Attention:
    """What ``attention`` read: the run's attention over training and at its last checkpoint
    (``autotune.report.attention_report``), and the PNG it wrote (None when asked not to)."""

    history: dict
    png: Path | None


def attention(run_dir: str | Path, *, batch: int = 512, png: bool = True) -> Attention:
    """`tql-tune attention`: per layer and token group, entropy against its target over
    training, the temperature and when the control engaged; at the last checkpoint, the spread
    of per-query entropies and largest weights on ``batch`` transitions of the run's data;
    ``attention.png`` in the run folder unless ``png`` is False."""
    from autotune.report.attention_report import attention_history, checkpoint_view, write_attention_png
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
