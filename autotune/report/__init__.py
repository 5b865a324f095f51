"""Statistics and reports: what studies found and how approaches compare.

Modules:

- ``data``: ``ComparisonData``, scores per approach, task and seed (with curves and progress);
- ``stats``: pure statistics over it: IQM, stratified bootstrap CIs, differences, paired tests;
- ``curves``: sample-efficiency curves and performance profiles (``rliable_summary``);
- ``summary``: studies read back per task (`tql-tune show`, ``--json``) and their terminal plots;
- ``comparison``: a comparison's report.md, report.png and rich tables;
- ``curve_plots``: the curves as report_curves.png and as a terminal plot;
- ``attention_report``: one run's attention entropy vs target over training (`tql-tune attention`).

May import: ``tql`` (errors, files), ``autotune.tuning`` (reading studies back), optuna,
numpy, scipy, matplotlib, plotext, rich tables (not rich's console: printing is
``autotune.cli``'s). Public names:
import them from their module.
"""
