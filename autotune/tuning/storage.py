"""Where studies live: an SQLite file by default, any SQLAlchemy URL, or an Optuna journal file.

- ``None`` -> ``sqlite:///tql-tune.db`` in the working directory (embedded, nothing to start);
- ``sqlite:///path.db``, ``postgresql://user@host/db``, ``mysql+pymysql://...``: ``RDBStorage``;
- ``journal:PATH`` or a path ending in ``.log``/``.journal``: ``JournalStorage`` over a file,
  which works on a shared file system without a database server.

Storages are opened with checks first, so a bad URL fails with one line before anything is
written.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import optuna

from tql.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///tql-tune.db"
VALID_FORMS = "sqlite:///FILE.db, postgresql://USER[:PASS]@HOST[:PORT]/DB, journal:FILE (or FILE.log)"
JOURNAL_SUFFIXES = (".log", ".journal")
# Workers started together (a cluster's job array) each create a new storage's tables and
# stamp its schema version; all but one lose that race with one of these errors, and the
# schema is there when they try again.
CREATE_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")
CREATE_ATTEMPTS = 20


def describe(url: str | None) -> str:
    """The URL with any password hidden, for messages and tables."""
    url = url or DEFAULT_STORAGE
    if _is_journal(url):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is reported by open_storage
        return url


def _is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(JOURNAL_SUFFIXES)


def journal_path(url: str) -> Path:
    return Path(url.removeprefix("journal:"))


def open_storage(url: str | None, create: bool = True) -> optuna.storages.BaseStorage:
    """Open (and for SQLite/journal files, create when ``create``) the storage behind ``url``."""
    url = url or DEFAULT_STORAGE
    if _is_journal(url):
        return _open_journal(url, create)
    return _open_rdb(url, create)


def _open_journal(url: str, create: bool) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = journal_path(url)
    if not path.parent.is_dir():
        raise ConfigError(f"storage {url!r}: folder {str(path.parent)!r} does not exist")
    if not create and not path.exists():
        raise ConfigError(f"storage {url!r}: no such journal file (run `tql-tune run` first)")
    # The open-lock works on NFS and other shared file systems (the symlink lock does not always).
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def _open_rdb(url: str, create: bool) -> optuna.storages.BaseStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"storage {url!r} is not a valid URL; valid forms: {VALID_FORMS}") from exc
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(url, parsed.database, create)
        # Several local workers write to one file: wait for the lock instead of failing at once.
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:
            raise ConfigError(f"storage {describe(url)!r} needs a database driver that is not installed ({exc}); "
                              "for PostgreSQL: pip install 'tql-tune[postgres]'") from exc
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot use it"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt + 1 < CREATE_ATTEMPTS and any(mark in reason for mark in CREATE_RACE):
                time.sleep(random.uniform(0.05, 0.5))  # another worker is creating the schema: it will be there
                continue
            raise ConfigError(f"cannot open storage {describe(url)!r}: {reason}") from exc
    raise AssertionError("unreachable")


def _check_sqlite_path(url: str, database: str | None, create: bool) -> None:
    if not database or database == ":memory:":
        raise ConfigError(f"storage {url!r}: an in-memory SQLite database cannot hold a study; "
                          f"give a file, e.g. {DEFAULT_STORAGE}")
    path = Path(database)
    if not path.parent.is_dir():
        raise ConfigError(f"storage {url!r}: folder {str(path.parent)!r} does not exist")
    if not create and not path.exists():
        raise ConfigError(f"storage {url!r}: no such database file (run `tql-tune run` first)")


def storage_identity(url: str | None) -> str:
    """What names one storage wherever the command runs: an SQLite or journal file by its
    absolute path, a database server's URL with its password hidden."""
    url = url or DEFAULT_STORAGE
    if _is_journal(url):
        return f"journal:{journal_path(url).resolve()}"
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return f"sqlite:///{Path(parsed.database).resolve()}"
    return describe(url)


def claim_runs_folder(folder: Path, url: str | None) -> None:
    """Run folders belong to one storage: ``folder`` (a study's runs) records the storage that
    first used it (``storage.json``); another storage's study of the same name is refused in
    one line before any trial starts, instead of every trial failing on runs it cannot resume."""
    from tql.io import atomic_write_json

    record, mine = folder / "storage.json", storage_identity(url)
    if record.is_file():
        import json

        theirs = json.loads(record.read_text()).get("storage")
        if theirs != mine:
            raise ConfigError(f"runs folder {str(folder)!r} holds the runs of a study in storage {theirs!r}, "
                              f"not {mine!r}; use another --runs-dir or --study name")
        return
    atomic_write_json(record, {"storage": mine})
