"""The Python API: what `tql-tune run`, `show`, `export`, `train`, `apply`, `attention`,
`data make`, `compare`, `lodo` and `experiment` do, with the same defaults, callable from a
script or a notebook. The CLI (``autotune.cli``) parses its options, calls these and draws the
terminal; nothing else happens there.

Messages go to ``say``, one line at a time, some with rich markup (a rich console's ``print``
renders it; plain ``print`` shows the tags); ``None`` keeps a function quiet. Bad input raises
``tql.errors.TQLError`` naming the bad value, before any work is written.

Modules, by what the commands do: ``tune`` (studies: run, show, export), ``training`` (single
runs: train, apply, attention, data make), ``comparing`` (compare, lodo, experiment) and
``options`` (what they share).

May import: the rest of ``autotune`` and ``tql`` (never ``autotune.cli``).
Public names: ``study_plan``, ``run_studies``, ``study_summary``, ``export_schedule``, ``train``,
``apply``, ``attention``, ``make_data``, ``compare``, ``lodo``, ``experiment``,
``write_comparison`` and the results they return (``Attention``, ``Comparison``,
``LeaveOneOut``, ``Experiment``).
"""

from autotune.api.comparing import Comparison, Experiment, LeaveOneOut, compare, experiment, lodo, write_comparison
from autotune.api.options import Say
from autotune.api.training import Attention, apply, attention, make_data, train
from autotune.api.tune import export_schedule, run_studies, study_plan, study_summary

__all__ = ["Attention", "Comparison", "Experiment", "LeaveOneOut", "Say", "apply", "attention", "compare",
           "experiment", "export_schedule", "lodo", "make_data", "run_studies", "study_plan", "study_summary",
           "train", "write_comparison"]
