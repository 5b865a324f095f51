"""Training loop: data -> agent updates -> metrics, evaluations, checkpoints, resume.

``TrainHooks`` is the one callback interface through which anything outside ``tql`` (the
auto-tuner's schedules, controllers and Optuna pruning) drives a run: it supplies H̄ per step
and sees every log and evaluation. ``tql`` itself never imports ``autotune``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tql.agent import AgentConfig, TQLAgent, compile_pays, critic_depth, flat_metrics
from tql.errors import ConfigError
from tql.eval_workers import EvalRequest, PolicyEvaluator, check_eval_workers, resolve_eval_workers
from tql.evaluation import EvalResult
from tql.graphs import CUDA_GRAPH_MODES, Uploader, make_step, use_cuda_graph
from tql.io import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl, rewrite_jsonl
from tql.targets import TARGET_SOURCES, Table, published_targets, rho_table, target_table
from tql.tasks import DEFAULT_RHO, TaskSpec, get_task

# Profiles: budgets that fit a machine. 'smoke' runs in seconds (tests, CI), 'cpu' in minutes
# on 2 cores, 'paper' is the paper's setting (1M steps, batch 256) for GPU machines.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=200, eval_every=100, eval_episodes=2, eval_max_steps=50, log_every=20,
                  checkpoint_every=100, data_episodes=4, data_episode_length=200,
                  agent=dict(size="0.03M", batch_size=32, actor_hidden=(64, 64), flow_steps=5)),
    "cpu": dict(steps=3000, eval_every=1000, eval_episodes=8, eval_max_steps=None, log_every=100,
                checkpoint_every=500, data_episodes=40, data_episode_length=1001,
                agent=dict(size="0.03M", batch_size=128, actor_hidden=(256, 256, 256))),
    "paper": dict(steps=1_000_000, eval_every=100_000, eval_episodes=50, eval_max_steps=None,
                  log_every=5000, checkpoint_every=50_000, data_episodes=None,  # OGBench's size per domain
                  data_episode_length=1001, agent=dict()),
}
DEFAULT_PROFILE = "cpu"


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
        population run (``tql.population_train``): a list with one such value per member, or
        one number for all."""
        return None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Called every ``log_every`` steps with host-side metrics."""

    def on_eval(self, step: int, result: EvalResult) -> bool:
        """Called after each evaluation; return True to stop the run now (e.g. pruning)."""
        return False

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


@dataclass
class TrainConfig:
    """One training run. ``profile`` fills budgets; explicit fields override it."""

    task: str
    steps: int = 3000
    seed: int = 0
    rho: float | list | None = None  # a number, one per layer, or a [depth, 2] table
    target_entropy: float | list | None = None  # the same in nats
    targets: str | None = None  # 'published': the paper's per-domain targets (tql.targets)
    eval_every: int = 1000
    eval_episodes: int = 8
    eval_max_steps: int | None = None
    eval_workers: int | str = "auto"  # evaluation processes (tql.eval_workers): 'auto' or N >= 1
    log_every: int = 100
    checkpoint_every: int = 500
    data_dir: str = "data"
    data_kind: str = "auto"
    make_data: bool = False
    data_episodes: int | None = 40  # None: OGBench's size for the domain (tql.data.default_episodes)
    data_episode_length: int = 1001
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    cuda_graph: str = "auto"  # 'auto': the update replayed from a CUDA graph on CUDA (tql.graphs)
    tf32: bool = True  # CUDA: float32 matmuls on TF32 tensor cores (10-bit mantissa inputs)
    profile: str = DEFAULT_PROFILE
    agent: AgentConfig = field(default_factory=AgentConfig)

    @classmethod
    def from_profile(cls, task: str, profile: str = DEFAULT_PROFILE, agent_overrides: dict | None = None,
                     **overrides) -> "TrainConfig":
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
        spec = get_task(task)
        preset = dict(PROFILES[profile])
        agent = AgentConfig.for_task(spec, **{**preset.pop("agent"), **(agent_overrides or {})})
        values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
        config = cls(task=task, profile=profile, agent=agent, **values)
        config.validate()
        return config

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)

    def validate(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads!r} must be >= 1")
        for name in ("steps", "eval_episodes", "log_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        given = [name for name, value in (("--rho", self.rho), ("--target-entropy", self.target_entropy),
                                          ("--targets", self.targets)) if value is not None]
        if len(given) > 1:
            raise ConfigError(f"give one of --rho, --target-entropy, --targets, not {' and '.join(given)}")
        if self.targets is not None and self.targets not in TARGET_SOURCES:
            raise ConfigError(f"targets {self.targets!r} is not one of: {', '.join(TARGET_SOURCES)}")
        self.constant_target()
        check_eval_workers(self.eval_workers)
        if self.cuda_graph not in CUDA_GRAPH_MODES:
            raise ConfigError(f"cuda_graph {self.cuda_graph!r} is not one of: {', '.join(CUDA_GRAPH_MODES)}")
        if self.data_kind not in ("auto", "official", "generated"):
            raise ConfigError(f"data kind {self.data_kind!r} is not one of: auto, official, generated")

    def constant_target(self) -> Table:
        """H̄ per (layer, group) used when no hook overrides it: explicit values, the
        published table, else rho (default DEFAULT_RHO) * log n. Checked here, once."""
        depth, max_entropy = critic_depth(self.agent), self.spec.max_entropy
        if self.targets == "published":
            return published_targets(self.spec.env_base, depth, max_entropy) if depth else []
        if self.target_entropy is not None:
            return target_table(self.target_entropy, depth, max_entropy)
        return rho_table(self.rho if self.rho is not None else DEFAULT_RHO, depth, max_entropy)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["agent"] = self.agent.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["agent"] = AgentConfig.from_dict(data["agent"])
        return cls(**data)


@dataclass
class TrainResult:
    task: str
    steps: int
    final_success: float | None
    evals: list[dict]
    wall_seconds: float
    data_kind: str
    out_dir: str
    stopped_early: bool = False
    members: int = 1  # population runs: K members, each trained for ``steps`` updates
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"bad device {name!r}; valid: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return device


_SPEED_ONLY_AGENT_OPTIONS = ("compile",)
# TrainConfig fields a resumed run may change (budget, cadence, machine); any other difference is refused.
RESUME_IGNORED = ("steps", "eval_every", "log_every", "checkpoint_every", "device", "threads", "make_data",
                   "cuda_graph", "tf32", "eval_workers")


def load_data(config: TrainConfig, device: torch.device, say: Callable[[str], None], progress: bool = True,
              warn: Callable[[str], None] | None = None):
    """The run's dataset and its train and held-out samplers on ``device``: ``(TaskData,
    ReplaySampler, ReplaySampler)``. ``tql.data.provide_task_data`` says which data (kind,
    episodes, transitions), generates it with ``make_data`` when missing or too small (beside
    the small one, on every core), and otherwise warns (``warn``, default ``say``) when it is
    smaller than the profile expects."""
    from tql.data import ReplaySampler, available_cpus, expected_size, provide_task_data

    task = config.spec
    expect = expected_size(task, config.data_episodes, config.data_episode_length)
    data = provide_task_data(task, config.data_dir, config.data_kind, expect, config.make_data, say, warn,
                             profile=config.profile, progress=progress, workers=available_cpus())
    return data, ReplaySampler(data.train, device), ReplaySampler(data.val, device)


VAL_BATCH = 512  # held-out transitions per TD-error measurement


@torch.no_grad()
def held_out_draws(sampler: Any, generator: torch.Generator, act_dim: int,
                   batch_size: int = VAL_BATCH) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A held-out TD measurement's random draws from ``generator``, in order: a batch of
    ``sampler`` (the -val data), then the target action's noise z' (as ``TQLAgent.act`` draws it)."""
    batch = sampler.sample(batch_size, generator)
    noise = torch.randn(batch_size, act_dim, device=batch["observations"].device, generator=generator)
    return batch, noise


def held_out_td_error(agent: TQLAgent, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """TD error of ``agent``'s critic on ``batch``, the target's action mu(s', z') from ``noise``."""
    with agent.autocast():
        next_actions = agent.actor(batch["next_observations"], noise).clamp(-1.0, 1.0)
    next_qs, _ = agent.target_critic(batch["next_observations"], next_actions)
    target = batch["rewards"] + agent.config.gamma * batch["masks"] * next_qs.mean(0)
    qs, _ = agent.critic(batch["observations"], batch["actions"])
    return (qs - target).pow(2).mean()


@torch.no_grad()
def held_out_td_loss(agent: TQLAgent, sampler: Any, generator: torch.Generator, batch_size: int = VAL_BATCH) -> float:
    """TD error of ``agent``'s critic on a batch of ``sampler`` (the -val data), drawn with
    ``generator`` (which the target action's noise also comes from)."""
    batch, noise = held_out_draws(sampler, generator, agent.act_dim, batch_size)
    return float(held_out_td_error(agent, batch, noise))


def make_evaluator(config: TrainConfig, device: torch.device, members: int = 1) -> PolicyEvaluator:
    """A run's evaluator: ``config.eval_workers`` processes ('auto': see ``resolve_eval_workers``)
    for evaluations of ``config.eval_episodes`` episodes of ``members`` actors at once (a
    population's members: more processes can be kept busy)."""
    episodes = config.eval_episodes * members
    workers = resolve_eval_workers(config.eval_workers, device, episodes, config.threads)
    return PolicyEvaluator(config.spec, config.eval_episodes, workers, members)


def policy_request(agent: TQLAgent, config: TrainConfig, episodes: int, seed: int, step: int) -> EvalRequest:
    """The evaluation of ``agent``'s one-step policy as it is now: ``episodes`` episodes (env
    seeds from ``seed``; each episode's action noise from its own generator, seeded
    ``(seed + step, episode)``), the same results whatever the number of evaluation processes."""
    return EvalRequest.of(agent.actor, episodes, seed, noise_seed=seed + step, max_steps=config.eval_max_steps)


def policy_episodes(agent: TQLAgent, evaluator: PolicyEvaluator, config: TrainConfig, episodes: int, seed: int,
                    step: int) -> EvalResult:
    """``policy_request``'s episodes, run now."""
    return evaluator.run_many([policy_request(agent, config, episodes, seed, step)])[0]


def eval_record(step: int, result: EvalResult, **extra) -> dict:
    """An evaluation as ``metrics.jsonl`` and ``summary.json`` hold it."""
    return {"step": step, "success_rate": result.success_rate, "episodes": result.episodes,
            "mean_return": float(np.mean(result.returns)), "env_steps": result.env_steps, **extra}


def warn_on(console: Any, text: str) -> None:
    """A one-line warning on the run's console, or as a Python warning without one."""
    if console is not None:
        console.print(f"[yellow]{text}")
    else:
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def set_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 tensor-core matmuls for float32 on a CUDA device (torch's default is off); the
    setting is process-wide, and a CPU run leaves it alone."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if enabled else "highest")


def _check_resumable(saved: dict, config: TrainConfig, out_dir: Path) -> None:
    """A checkpoint may only be resumed by the same run (budget fields may change)."""
    current = json.loads(json.dumps(config.to_dict()))  # tuples read back as lists
    if isinstance(saved.get("agent"), dict):  # agent options added since the run began take their defaults
        saved = {**saved, "agent": json.loads(json.dumps(AgentConfig.from_dict(saved["agent"]).to_dict()))}
        # Speed-only agent options may change on resume (the same math, compiled or not).
        saved["agent"].update({k: current["agent"][k] for k in _SPEED_ONLY_AGENT_OPTIONS})
    diffs = [k for k in current if k not in RESUME_IGNORED and saved.get(k) != current[k]]
    if diffs:
        raise ConfigError(
            f"{out_dir} holds a run with different settings ({', '.join(diffs)}); "
            "use another --out, or --fresh to discard it"
        )


class Trainer:
    """Runs one ``TrainConfig``: owns the agent, sampler, output files and the step loop."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, hooks: TrainHooks | None = None,
                 fresh: bool = False, console: Any = None, progress: bool = True):
        config.validate()
        self.config, self.task, self.hooks = config, config.spec, hooks or TrainHooks()
        self.out_dir, self.console, self.show_progress = Path(out_dir), console, progress
        self.device = resolve_device(config.device)
        use_cuda_graph(config.cuda_graph, self.device)  # 'on' without CUDA: refused before any work
        set_tf32(self.device, config.tf32)
        if config.threads:
            # Several workers on one machine each get a share: oversubscribed OpenMP threads
            # spin against each other and can slow updates down a hundredfold.
            torch.set_num_threads(config.threads)
        self.data, self.sampler, self.val_sampler = load_data(config, self.device, self._say, progress, self._warn)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.depth = critic_depth(config.agent)
        self.constant_table = config.constant_target()
        self._last_hook: tuple[Any, Table | None] = (object(), None)
        self._last_table: tuple[Any, torch.Tensor | None] = (None, None)
        self.agent = self._make_agent()
        self.update = make_step(self._update_once, self.device, config.cuda_graph, self._generators(), self._warn)
        self.upload = Uploader(self.device)
        self.step, self.evals, self.wall_before = 0, [], 0.0
        self._evaluator: PolicyEvaluator | None = None  # env pool or worker processes: built at the first evaluation
        self._prepare_out_dir(fresh)

    def _make_agent(self) -> Any:
        return TQLAgent(self.task.obs_dim, self.task.act_dim, self.config.agent, self.device,
                        total_steps=self.config.steps, compile_default=compile_pays(self.device, self.config.steps))

    def _update_once(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on a fresh batch: everything on the device, no host sync (capturable)."""
        return self.agent.update(self.sampler.sample(self.config.agent.batch_size, self.generator), target)

    def _generators(self) -> list[torch.Generator]:
        """The device generators an update draws from (a CUDA graph must advance them)."""
        return [self.generator]

    def _warn(self, text: str) -> None:
        warn_on(self.console, text)

    def _run_record(self) -> dict:
        """Settings besides ``TrainConfig`` that a resumed run must share (subclasses add some)."""
        return {}

    # ----- files ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def _prepare_out_dir(self, fresh: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / "config.json"
        if fresh:
            for path in (self.checkpoint_path, self.metrics_path, config_path, self.out_dir / "summary.json"):
                path.unlink(missing_ok=True)
        if self.checkpoint_path.exists():
            saved = json.loads(config_path.read_text())
            _check_resumable(saved["train"], self.config, self.out_dir)
            if any(saved.get(key) != value for key, value in self._run_record().items()):
                raise ConfigError(f"{self.out_dir} holds a run with different settings "
                                  f"({', '.join(self._run_record())}); use another --out, or --fresh to discard it")
            self._load_checkpoint()
        else:
            self.metrics_path.unlink(missing_ok=True)
        atomic_write_json(config_path, {"train": self.config.to_dict(), "task": self.task.name,
                                        "n_tokens": self.task.n_tokens, "data_kind": self.data.kind,
                                        "data_meta": self.data.meta, **self.data.size_record(),
                                        "device": str(self.device),
                                        **self._run_record()})

    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "agent": self.agent.full_state(), "evals": self.evals,
                 "torch_rng": torch.get_rng_state(), "generator": self.generator.get_state(),
                 "hooks": self.hooks.state_dict(), "wall_seconds": self._wall(), **self._extra_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_torch_save(state, self.checkpoint_path)

    def _load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.agent.load_full_state(state["agent"])
        self.step, self.evals, self.wall_before = state["step"], state["evals"], state["wall_seconds"]
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.hooks.load_state_dict(state["hooks"])
        self._load_extra_state(state)
        # Drop metrics logged after the checkpoint: those steps run again.
        rewrite_jsonl(self.metrics_path, [r for r in read_jsonl(self.metrics_path) if r["step"] <= self.step])
        self._say(f"resuming {self.task.name} from step {self.step} ({self.checkpoint_path})")

    def _result_fields(self) -> dict:
        """More ``TrainResult`` fields (subclasses)."""
        return {}

    def _extra_state(self) -> dict:
        """More checkpointed state (subclasses)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0)

    # ----- the loop ------------------------------------------------------------------------
    def target_at(self, step: int) -> torch.Tensor:
        """H̄ ``[depth, 2]`` for this update on the agent's device: the hook's, else the run's
        constant. Checked when it changes (a bad hook value is a ConfigError naming it)."""
        return self._target_tensor(self._hook_table(self.hooks.target_entropy(step, step / self.config.steps), step))

    def _hook_table(self, value: Any, step: int) -> Table:
        if value is None:
            return self.constant_table
        key = frozen_target(value)
        if key != self._last_hook[0]:
            what = f"H̄ (from a hook at step {step})"
            self._last_hook = (key, target_table(value, self.depth, self.task.max_entropy, what))
        return self._last_hook[1]

    def _target_tensor(self, table: Table) -> torch.Tensor:
        """One host-to-device copy per new table, not per step, and none that waits for the
        device (a schedule may give a new table at every update)."""
        if table is not self._last_table[0]:
            self._last_table = (table, self.upload(table, (-1, 2)))
        return self._last_table[1]

    def run(self) -> TrainResult:
        self._t0 = time.perf_counter()
        try:
            stopped = self._loop()
        finally:
            if self._evaluator is not None:
                self._evaluator.close()
                self._evaluator = None
        return self._finish(stopped)

    def _loop(self) -> bool:
        stopped = False
        with self._progress_bar() as advance:
            while self.step < self.config.steps and not stopped:
                metrics = self.update(self.target_at(self.step))
                self.step += 1
                advance(self.step)
                if self.step % self.config.log_every == 0:
                    self._log(metrics)
                if self._due(self.config.eval_every) or self.step == self.config.steps:
                    stopped = self._evaluate()
                if self._due(self.config.checkpoint_every) or self.step == self.config.steps or stopped:
                    self._save_checkpoint()
        return stopped

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0

    def _log(self, metrics: dict) -> None:
        row = flat_metrics(metrics)
        row["val/td_loss"] = self.val_td_loss()
        row["time/wall_seconds"] = self._wall()
        for key, value in row.items():
            if not math.isfinite(value):
                raise TrainingDiverged(self.step, key, value)
        append_jsonl(self.metrics_path, {"step": self.step, "type": "train", **row})
        self.hooks.on_log(self.step, row)
        self.last_log = row

    def val_td_loss(self, batch_size: int = VAL_BATCH) -> float:
        """TD error of the critic on a held-out (-val) batch: a cheap signal for controllers."""
        return held_out_td_loss(self.agent, self.val_sampler, self.generator, batch_size)

    def _make_evaluator(self) -> PolicyEvaluator:
        return make_evaluator(self.config, self.device)

    @property
    def evaluator(self) -> PolicyEvaluator:
        if self._evaluator is None:
            # Building an OGBench env costs ~1 s (MuJoCo compilation): keep one evaluator per run.
            self._evaluator = self._make_evaluator()
        return self._evaluator

    def _episodes(self, agent: TQLAgent, episodes: int, seed: int) -> EvalResult:
        """Roll out ``agent``'s one-step policy for ``episodes`` episodes (env seeds from ``seed``)."""
        return policy_episodes(agent, self.evaluator, self.config, episodes, seed, self.step)

    def _record_eval(self, result: EvalResult, **extra) -> dict:
        record = eval_record(self.step, result, **extra)
        self.evals.append(record)
        append_jsonl(self.metrics_path, {"type": "eval", **record})
        self.last_success = result.success_rate
        return record

    def _evaluate(self) -> bool:
        result = self._episodes(self.agent, self.config.eval_episodes, self.config.seed)
        self._record_eval(result)
        return bool(self.hooks.on_eval(self.step, result))

    def _finish(self, stopped: bool) -> TrainResult:
        result = TrainResult(
            task=self.task.name, steps=self.step,
            final_success=self.evals[-1]["success_rate"] if self.evals else None,
            evals=self.evals, wall_seconds=self._wall(), data_kind=self.data.kind,
            out_dir=str(self.out_dir), stopped_early=stopped, **self._result_fields(),
        )
        result.extra = {**self.data.size_record(), **result.extra}
        atomic_write_json(self.out_dir / "summary.json", result.to_dict())
        return result

    def _progress_bar(self):
        return _ProgressBar(self, enabled=self.show_progress)


def frozen_target(value: Any) -> Any:
    """A hashable, comparable copy of a hook's target (number, list, table, array)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(frozen_target(v) for v in value)
    return value


class _ProgressBar:
    """A rich progress bar with the latest TD loss, entropy gap and success, or nothing."""

    def __init__(self, trainer: Trainer, enabled: bool):
        self.trainer, self.enabled, self.progress = trainer, enabled, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda step: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                 console=self.trainer.console, transient=False)
        self.progress.start()
        t = self.trainer
        self.bar = self.progress.add_task(t.task.name, total=t.config.steps, completed=t.step, status="")
        return self._advance

    def _advance(self, step: int) -> None:
        if step % self.trainer.config.log_every and step != self.trainer.config.steps:
            return
        self.progress.update(self.bar, completed=step, status=self._status())

    def _status(self) -> str:
        t = self.trainer
        parts = []
        if getattr(t, "last_log", None):
            parts.append(f"td {t.last_log['critic/td_loss']:.4f}")
            if "target_entropy" in t.last_log:
                parts.append(f"H̄ {t.last_log['target_entropy']:.2f}")
        if getattr(t, "last_success", None) is not None:
            parts.append(f"success {100 * t.last_success:.0f}%")
        return "  ".join(parts)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(config: TrainConfig, out_dir: str | Path, hooks: TrainHooks | None = None, fresh: bool = False,
          console: Any = None, progress: bool = True) -> TrainResult:
    """Train (or resume) one run and return its result; see ``Trainer``."""
    return Trainer(config, out_dir, hooks, fresh, console, progress).run()


__all__ = ["PROFILES", "TrainConfig", "TrainHooks", "TrainResult", "Trainer", "TrainingDiverged", "train",
           "resolve_device"]
