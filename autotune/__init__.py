"""Auto-tuning the attention target entropy H̄ of ``tql``: schedules, controllers, Optuna
studies, comparisons, transfer, and the `tql-tune` command line.

The pipeline, and the package or module of each stage:

- ``schedules``: H̄ as rho(p) over training progress (``Schedule``, ``ScheduleHooks``);
- ``controllers/``: adaptive H̄ during training (feedback, population-based);
- ``targeting``, ``agent_options``: how one run sets H̄ and its agent options;
- ``forecast``: whether H̄ can act in a run, in one line (from ``tql.engagement``), and when
  the pruner may judge a trial;
- ``tuning/``: Optuna studies over H̄ (spec, storage, trials one by one or batched, the trial
  lifecycle in shared storage, tied best trials, progress);
- ``approaches``, ``transfer``: every approach on the same tasks and seeds; schedules carried
  to new tasks;
- ``experiment/``: the whole comparison sized to a time budget (spec, cost model, probe, plan);
- ``tracking/``: runs and studies mirrored into W&B and TensorBoard (``--log``);
- ``report/``: statistics (IQM, bootstrap CIs, rliable curves) and reports (study summaries,
  Markdown, PNG, terminal plots);
- ``api``: the Python API; ``cli/``: `tql-tune`, a thin layer over it and the only place that
  knows typer and rich's console.

May import: ``tql`` (never the other way), optuna, numpy, scipy, matplotlib, plotext, rich.
Public names (``autotune.api``, imported on first use): ``run_studies``, ``study_plan``,
``study_summary``, ``export_schedule``, ``train``, ``apply``, ``attention``, ``make_data``,
``compare``, ``lodo``, ``experiment``, ``write_comparison``.
"""

_API = ("apply", "attention", "compare", "experiment", "export_schedule", "lodo", "make_data", "run_studies",
        "study_plan", "study_summary", "train", "write_comparison")
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'autotune' has no attribute {name!r}")
    from autotune import api

    return getattr(api, name)
