"""The ``postgres_url`` fixture gives a working Optuna RDB storage (skipped without PostgreSQL)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

STUDY = "pg-fixture-check"


def test_postgres_url_round_trips_an_optuna_study(postgres_url):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(postgres_url)  # creates the schema
    assert STUDY not in [s.study_name for s in storage.get_all_studies()]

    study = optuna.create_study(storage=postgres_url, study_name=STUDY)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)

    loaded = optuna.load_study(study_name=STUDY, storage=postgres_url)
    trials = loaded.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    assert [t.value for t in trials] == [t.value for t in study.trials]
    assert [t.params["x"] for t in trials] == [t.value for t in trials]
    assert STUDY in [s.study_name for s in storage.get_all_studies()]
