"""A trial's life in shared storage: what counts toward a study's size, claiming the next
trial, heartbeats, and retrying trials whose worker was lost (``autotune.tuning.studies`` runs them).

Workers never talk to each other: all of this goes through the storage, so it holds for one
process, ``--workers W`` processes, or many machines on one PostgreSQL URL or journal file.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "tql:heartbeat"
WORKER_ATTR = "tql:worker"
# fail_kind values of failed trials that are retried (re-queued) or not counted at all.
RETRIED_KINDS = ("worker_lost", "interrupted")
UNCOUNTED_KINDS = RETRIED_KINDS + ("error", "surplus")


def fail_kind(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get("fail_kind") if trial.state == TrialState.FAIL else None


def is_counted(trial: FrozenTrial) -> bool:
    return fail_kind(trial) not in UNCOUNTED_KINDS


def trial_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "retried": 0}
    for t in trials:
        if t.state == TrialState.FAIL:
            counts["retried" if fail_kind(t) in RETRIED_KINDS else "failed"] += fail_kind(t) != "surplus"
        else:
            counts[t.state.name.lower()] += 1
    return counts


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_gone(worker: str | None) -> bool:
    """True when ``worker`` was a process on this host that no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def stale_reason(trial: FrozenTrial, grace_period: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker counts as lost, or None while it looks alive."""
    if trial.state != TrialState.RUNNING:
        return None
    worker = trial.system_attrs.get(WORKER_ATTR)
    if _pid_gone(worker):
        return f"worker {worker} is gone"
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    now = time.time() if now is None else now
    if beat is not None and now - beat > grace_period:
        return f"no heartbeat from {worker or 'its worker'} for {now - beat:.0f}s (grace {grace_period:g}s)"
    return None


def retry_trial(study: optuna.Study, trial: FrozenTrial, kind: str, reason: str) -> bool:
    """Fail ``trial`` with ``reason`` and queue a retry with the same rho and run folder (and
    batch, for a batched trial: ``autotune.tuning.batched``).

    Returns False when another worker finished or retried it first (only one retry is queued)."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_kind", kind)
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    attrs = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
    # A batched trial's retry keeps its batch, so it can resume from the population's checkpoint.
    attrs.update({key: trial.user_attrs[key] for key in ("run_dir", "batch_id", "batch_dir") if key in trial.user_attrs})
    study.enqueue_trial(dict(trial.params), user_attrs=attrs, skip_if_exists=False)
    return True


def retry_stale_trials(study: optuna.Study, grace_period: float) -> int:
    retried = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, grace_period)
        if reason is not None:
            retried += retry_trial(study, trial, "worker_lost", reason)
    return retried


def claim_trial(study: optuna.Study, target: int) -> optuna.Trial | None:
    """The next trial to run (a queued one first), or None when the study has ``target`` trials.

    Two workers may claim at the same moment; the claim is then checked by trial number, so
    at most ``target`` counted trials exist whatever the timing (a surplus one is failed with
    kind 'surplus', which is not counted)."""
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and sum(map(is_counted, trials)) >= target:
        return None
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, _worker_id())
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and is_counted(t)]
    if len(earlier) >= target:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_kind", "surplus")
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def claim_waiting(study: optuna.Study, trial_id: int) -> optuna.Trial | None:
    """Claim one particular queued trial (as ``study.ask`` claims the first), or None when
    another worker took it first. Queued trials are counted already, so the size stays exact."""
    try:
        if not study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
            return None
    except UpdateFinishedTrialError:
        return None
    study._thread_local.cached_all_trials = None
    trial = optuna.Trial(study, trial_id)
    study._storage.set_trial_system_attr(trial_id, WORKER_ATTR, _worker_id())
    return trial


class Heartbeat:
    """Writes the time into the trial(s) every ``interval`` seconds from one background thread
    (a batch's trials share it); a trial that has finished meanwhile drops out."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial | list[optuna.Trial], interval: float):
        trials = trial if isinstance(trial, list) else [trial]
        self.storage, self.trial_ids, self.interval = study._storage, [t._trial_id for t in trials], interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tql-heartbeat")

    def _beat(self) -> None:
        for trial_id in list(self.trial_ids):
            try:
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                self.trial_ids.remove(trial_id)  # pruned, or another worker declared us lost and retried it
        if not self.trial_ids:
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
