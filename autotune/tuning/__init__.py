"""Optuna studies over H̄: one study per task, each trial a TQL run (or seeds of one).

Modules:

- ``study_spec``: study specs (``studies/*.toml``): the search space, budgets, sampler, pruner;
- ``trials``: what every way of running a trial shares: ``RunPlan``, a trial's schedule, its
  objective and outcome, and the attributes it records;
- ``studies``: creating and checking studies, running trials one by one, worker processes;
- ``batched``: ``run --batch K``: a task's trials trained together as one population;
- ``lifecycle``: a trial's life in shared storage: counting, claiming, heartbeats, retries;
- ``storage``: where studies live (SQLite by default, PostgreSQL, journal files);
- ``ties``: best trials that are ties; ``progress``: the live progress of `tql-tune run`.

May import: ``tql``, optuna, ``autotune.schedules``; nothing downstream (``autotune.report``
reads studies, not the other way round). Public names: import them from their module; the Python API over
them is ``autotune.api`` (``run_studies``, ``study_summary``, ``export_schedule``).
"""
