"""What one training run is: its settings (``TrainConfig``, filled from a named profile), its
result (``TrainResult``), the device it runs on, and which settings a resumed run may change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tql.agent import AgentConfig, critic_depth
from tql.collapse import DEFAULT_ALARM
from tql.engagement import EngagementForecast, predict_engagement
from tql.errors import ConfigError
from tql.eval_workers import check_eval_workers
from tql.graphs import CUDA_GRAPH_MODES
from tql.targets import TARGET_SOURCES, Table, published_targets, rho_table, target_table
from tql.tasks import DEFAULT_RHO, TaskSpec, get_task


# Profiles: budgets that fit a machine. 'smoke' runs in seconds (tests, CI), 'cpu' in minutes
# on 2 cores, 'paper' is the paper's setting (1M steps, batch 256) for GPU machines.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=200, eval_every=100, eval_episodes=2, eval_max_steps=50, log_every=20,
                  checkpoint_every=100, data_episodes=32, data_episode_length=200,
                  agent=dict(size="0.03M", batch_size=32, actor_hidden=(64, 64), flow_steps=5)),
    "cpu": dict(steps=3000, eval_every=1000, eval_episodes=8, eval_max_steps=None, log_every=100,
                checkpoint_every=500, data_episodes=40, data_episode_length=1001,
                agent=dict(size="0.03M", batch_size=128, actor_hidden=(256, 256, 256))),
    "paper": dict(steps=1_000_000, eval_every=100_000, eval_episodes=50, eval_max_steps=None,
                  log_every=5000, checkpoint_every=50_000, data_episodes=None,  # OGBench's size per domain
                  data_episode_length=1001, agent=dict()),
}
DEFAULT_PROFILE = "cpu"


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
    collapse_alarm: float = DEFAULT_ALARM  # flag attention below this fraction of log n (tql.collapse); 0: off
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
        if not 0.0 <= self.collapse_alarm < 1.0:
            raise ConfigError(f"collapse_alarm={self.collapse_alarm!r} must be in [0, 1): a fraction of log n "
                              "(0 turns the alarm off)")
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

    @property
    def transitions(self) -> int:
        """Training transitions in the run's dataset (OGBench's size when ``data_episodes`` is None)."""
        from tql.data.generate import default_episodes

        episodes = self.data_episodes if self.data_episodes is not None else default_episodes(self.spec.env_base)
        return episodes * self.data_episode_length

    def highest_rho(self) -> float:
        """The highest constant target as a fraction of log n: the one attention reaches first."""
        table = self.constant_target()
        return max((max(row) for row in table), default=1.0) / self.spec.max_entropy

    def engagement(self, rho: float | None = None, steps: int | None = None) -> EngagementForecast:
        """When the control is predicted to engage (``tql.engagement``), for the highest target
        ``rho`` (default: this run's constant target's) over ``steps`` (default: the run's)."""
        return predict_engagement(self.agent, steps or self.steps, self.highest_rho() if rho is None else rho,
                                  self.spec.max_entropy, self.transitions)

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
                   "cuda_graph", "tf32", "eval_workers", "collapse_alarm")


def set_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 tensor-core matmuls for float32 on a CUDA device (torch's default is off); the
    setting is process-wide, and a CPU run leaves it alone."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if enabled else "highest")


def check_resumable(saved: dict, config: TrainConfig, out_dir: Path) -> None:
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
