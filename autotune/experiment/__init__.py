"""`tql-tune experiment`: data, studies and every approach's runs in one resumable command,
sized to a time budget.

Modules: ``spec`` (``studies/experiment.toml``: tasks, seeds, approaches, study sizes, the
reference machine), ``cost`` (what each phase costs, and the steps per run that fit a budget),
``probe`` (a few seconds' measurement of this machine's speeds) and ``plan`` (the plan, its
notes, and running its phases).

May import: ``tql``, ``autotune.tuning``, ``autotune.approaches``, ``autotune.report``; not
``autotune.cli``. Public names: import them from their module.
"""
