"""Shared fixtures: one tiny generated dataset for the trainer and CLI tests."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

# Small models run as fast on one thread, and a shared 2-core machine with two OpenMP
# threads per process can slow them a hundredfold; keep the suite's timing predictable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_TASK = "cube-double-play-singletask-task2-v0"


@pytest.fixture(autouse=True)
def _env_warnings_silenced():
    """The filters ``tql.envs`` sets where envs are built, for every test: pytest restores the
    filters after each test, and an env built in one test may warn on reset in the next."""
    from tql.envs import silence_env_warnings

    silence_env_warnings()


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data dir with a generated cube-double-play dataset (3+1 episodes of 100 steps)."""
    from tql.data import generate_dataset
    from tql.tasks import get_task

    data_dir = tmp_path_factory.mktemp("data")
    generate_dataset(get_task(TINY_TASK), data_dir, episodes=3, episode_length=100, seed=0, progress=False)
    return data_dir


SCENE_TASK = "scene-play-singletask-task1-v0"


@pytest.fixture(scope="session")
def two_domain_data_dir(tiny_data_dir) -> Path:
    """``tiny_data_dir`` plus a tiny generated scene-play dataset (another domain, another n)."""
    from tql.data import generate_dataset
    from tql.tasks import get_task

    generate_dataset(get_task(SCENE_TASK), tiny_data_dir, episodes=2, episode_length=100, seed=0, progress=False)
    return tiny_data_dir


@pytest.fixture(scope="session")
def postgres_url(request) -> str:
    """SQLAlchemy URL of a throwaway PostgreSQL database on loopback (see ``tests/pg_server.py``).

    ``TQL_TEST_POSTGRES_URL`` overrides it; without Debian's postgresql (or psycopg2) the
    requesting tests are skipped with the reason, which is also printed to stderr.
    """
    from tests.pg_server import PostgresUnavailable, start_postgres

    server = start_postgres()
    try:
        url = server.__enter__()
    except PostgresUnavailable as exc:
        reason = f"no PostgreSQL for tests: {exc.reason}"
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\n[postgres_url] {reason}", file=sys.stderr, flush=True)
        pytest.skip(reason)
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    return url
