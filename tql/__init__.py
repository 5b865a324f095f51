"""Transformer Q-Learning (TQL) on OGBench: model, entropy control, agent, data, evaluation,
training. This package knows nothing about Optuna or auto-tuning; ``autotune`` drives a run
through ``tql.trainer.TrainHooks``.

Packages and modules, along the pipeline data -> agent -> trainer:

- ``tasks``, ``envs``: the OGBench single tasks (name resolution, n, episode length) and the
  one place an environment is built;
- ``data/``: datasets (generation with OGBench's oracles, loading, relabelling, sampling);
- ``model``, ``entropy``, ``targets``, ``agent``: the critics, the attention-entropy control,
  target tables H̄ per (layer, token group), and the TQL agent (FQL policy extraction);
- ``evaluation``, ``eval_workers``: policy evaluation, in this process or in workers;
- ``graphs``: one update replayed from a CUDA graph;
- ``engagement``: when the temperature control engages, predicted from a run's configuration
  (how far the temperatures decay; when attention would fall to H̄);
- ``attention``: where a trained critic's attention goes, query row by query row;
- ``trainer/``: one run's loop, checkpoints and metrics (``TrainConfig``, ``TrainHooks``, ``train``);
- ``batched/``: K members at once (batched forward and losses, the population, independent
  trials trained together, population-based training);
- ``io``, ``errors``: atomic files, user-facing errors.

May import: torch, numpy, gymnasium, ogbench, rich (progress bars only); never ``autotune``.
Public names (imported on first use, so ``import tql`` stays light): ``train``,
``TrainConfig``, ``TrainHooks``, ``TrainResult``, ``PROFILES``, ``get_task``, ``resolve_tasks``.
"""

__version__ = "0.2.0"

_PUBLIC = {"train": "tql.trainer", "TrainConfig": "tql.trainer", "TrainHooks": "tql.trainer",
           "TrainResult": "tql.trainer", "PROFILES": "tql.trainer", "get_task": "tql.tasks",
           "resolve_tasks": "tql.tasks"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tql' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
