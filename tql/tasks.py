"""The OGBench single-task environments TQL is evaluated on, and name resolution.

A task name looks like ``cube-double-play-singletask-task2-v0``: domain ``cube-double-play``
(environment ``cube-double`` + dataset type ``play``), task 2. The dataset is shared by the
five tasks of a domain (``cube-double-play-v0.npz``); rewards are relabelled per task.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from tql.envs import make_env
from tql.errors import UnknownTaskError

PAPER_DOMAINS = (
    "cube-double-play",
    "scene-play",
    "puzzle-3x3-play",
    "puzzle-4x4-play",
    "cube-triple-play",
)
TASK_IDS = (1, 2, 3, 4, 5)
# OGBench's manipulation datasets come in these two types only ('navigate', 'stitch' and
# 'explore' are locomotion datasets).
DATASET_TYPES = ("play", "noisy")
# Reward relabelling (tql.data.datasets.goal_from_env) reads cube, button, drawer and window
# targets, which only these environments have; every other OGBench family is refused by name.
MANIPULATION_ENVS = ("cube-", "scene", "puzzle-")
LOCOMOTION_ENVS = ("pointmaze-", "antmaze-", "humanoidmaze-", "antsoccer-")
_SUPPORTED_HINT = "tql-tune relabels rewards for the state-based manipulation domains only (cube-*, scene, puzzle-*)"

# (obs_dim, act_dim, evaluation episode length) of the environments we know without
# instantiating them; checked against the real environments in tests/test_tasks.py.
_KNOWN_ENVS = {
    "cube-single": (28, 5, 200),
    "cube-double": (37, 5, 500),
    "cube-triple": (46, 5, 1000),
    "cube-quadruple": (55, 5, 1000),
    "scene": (40, 5, 750),
    "puzzle-3x3": (55, 5, 500),
    "puzzle-4x4": (83, 5, 500),
}

# Our choice (the paper sets H̄ by hand per domain, docs/published.md): H̄ = DEFAULT_RHO * log n.
DEFAULT_RHO = 0.6

_NAME_RE = re.compile(r"^(?P<env>.+)-(?P<dtype>[a-z]+)-singletask(?:-task(?P<task>\d+))?-v0$")


@dataclass(frozen=True)
class TaskSpec:
    """Everything the trainer needs to know about one single-task environment."""

    name: str
    env_base: str
    dataset_type: str
    task_id: int | None
    obs_dim: int
    act_dim: int
    episode_length: int

    @property
    def domain(self) -> str:
        return f"{self.env_base}-{self.dataset_type}"

    @property
    def env_name(self) -> str:
        """Gymnasium id of the evaluation environment."""
        suffix = f"-task{self.task_id}" if self.task_id is not None else ""
        return f"{self.env_base}-singletask{suffix}-v0"

    @property
    def dataset_name(self) -> str:
        """OGBench dataset file stem, shared by all tasks of the domain."""
        return f"{self.domain}-v0"

    @property
    def data_env_name(self) -> str:
        """Gymnasium id of the multi-task environment used to collect data."""
        return f"{self.env_base}-v0"

    @property
    def n_tokens(self) -> int:
        """Critic sequence length: [VALUE] + one token per state and action scalar."""
        return 1 + self.obs_dim + self.act_dim

    @property
    def max_entropy(self) -> float:
        return math.log(self.n_tokens)

    @property
    def is_manipulation(self) -> bool:
        return self.env_base.startswith(MANIPULATION_ENVS)

    @property
    def alpha_fql(self) -> float:
        """FQL's BC coefficient: 1000 for puzzles, 300 for cube and scene (and others)."""
        return 1000.0 if self.env_base.startswith("puzzle") else 300.0

    def target_entropy(self, rho: float) -> float:
        """H̄ = rho * log n."""
        return rho * self.max_entropy


def paper_task_names() -> list[str]:
    return [f"{d}-singletask-task{k}-v0" for d in PAPER_DOMAINS for k in TASK_IDS]


def _valid_choices_hint() -> str:
    return (
        "valid: 'all', a domain (" + ", ".join(PAPER_DOMAINS) + "), a comma list, or any OGBench "
        "manipulation singletask name (cube-*, scene, puzzle-*; play or noisy data) such as "
        "cube-double-play-singletask-task2-v0"
    )


def _registered_env_ids() -> set[str]:
    import gymnasium

    import ogbench  # noqa: F401  (registers the environments)

    return set(gymnasium.registry)


@functools.lru_cache(maxsize=None)
def _env_dims(env_base: str, env_name: str) -> tuple[int, int, int]:
    if env_base in _KNOWN_ENVS:
        return _KNOWN_ENVS[env_base]
    env = make_env(env_name)
    try:
        dims = (
            int(env.observation_space.shape[0]),
            int(env.action_space.shape[0]),
            int(env.spec.max_episode_steps),
        )
    finally:
        env.close()
    return dims


def _check_manipulation(name: str, env_base: str, dtype: str) -> None:
    """Refuse non-manipulation names from the name alone, before any env or registry lookup.

    Locomotion names are valid OGBench tasks, but our reward relabelling cannot handle them and
    would fail only after loading data; saying so up front is cheaper and clearer.
    """
    if env_base.startswith(LOCOMOTION_ENVS):
        raise UnknownTaskError(f"task {name!r} is a locomotion task; {_SUPPORTED_HINT}; {_valid_choices_hint()}")
    if not env_base.startswith(MANIPULATION_ENVS):
        raise UnknownTaskError(f"unknown task {name!r}: {_SUPPORTED_HINT}; {_valid_choices_hint()}")
    if dtype not in DATASET_TYPES:
        raise UnknownTaskError(
            f"unknown task {name!r}: dataset type {dtype!r} is not one of OGBench's manipulation "
            f"types ({', '.join(DATASET_TYPES)}); {_valid_choices_hint()}"
        )


@functools.lru_cache(maxsize=None)
def get_task(name: str) -> TaskSpec:
    """Parse and validate one OGBench manipulation single-task name; raise UnknownTaskError otherwise."""
    match = _NAME_RE.match(name.strip())
    if not match:
        raise UnknownTaskError(f"unknown task {name!r}; {_valid_choices_hint()}")
    env_base, task = match["env"], match["task"]
    _check_manipulation(name.strip(), env_base, match["dtype"])
    task_id = int(task) if task is not None else None
    env_name = f"{env_base}-singletask{'-task' + task if task else ''}-v0"
    if env_base not in _KNOWN_ENVS and env_name not in _registered_env_ids():
        raise UnknownTaskError(f"unknown task {name!r}; {_valid_choices_hint()}")
    if env_base in _KNOWN_ENVS and task_id is not None and not 1 <= task_id <= 5:
        raise UnknownTaskError(f"unknown task {name!r}: task ids are 1..5; {_valid_choices_hint()}")
    obs_dim, act_dim, length = _env_dims(env_base, env_name)
    return TaskSpec(name.strip(), env_base, match["dtype"], task_id, obs_dim, act_dim, length)


def resolve_tasks(spec: str) -> list[TaskSpec]:
    """'all' -> the paper's 25 tasks; a domain -> its 5 tasks; else a comma list of names."""
    spec = spec.strip()
    if spec == "all":
        return [get_task(n) for n in paper_task_names()]
    tasks: list[TaskSpec] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in PAPER_DOMAINS:
            tasks.extend(get_task(f"{part}-singletask-task{k}-v0") for k in TASK_IDS)
        else:
            tasks.append(get_task(part))
    if not tasks:
        raise UnknownTaskError(f"no task given in {spec!r}; {_valid_choices_hint()}")
    return list(dict.fromkeys(tasks))
