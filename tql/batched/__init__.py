"""K members of one task at once, as one batched computation on one device.

Modules, from the arithmetic up:

- ``forward``: K members' forward passes and losses as explicit batched matmuls (the
  population's native backend), the same numbers as K ``TQLAgent``s;
- ``stacked``: ``Population``, K agents stacked to ``[K, *shape]``: one update, per-member
  H̄, copies between members, state in and out;
- ``batch_runs``: ``train_batch``, independent runs (seeds, H̄) trained together, each with its own
  output folder, evaluations and early stop, resumable as one;
- ``pbt``: ``train_population``, population-based training (members copied by fitness through
  ``TrainHooks.on_population``).

May import: ``tql`` modules (``tql.trainer`` for the loop these reuse); never ``autotune``.
Public names: import them from their module (``tql.batched.batch_runs.train_batch``, ...).
"""
