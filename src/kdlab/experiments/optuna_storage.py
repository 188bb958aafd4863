"""The Optuna storage that ``kdlab tune`` and ``kdlab study --storage`` share work through.

Default: a SQLite file in the output folder (``sqlite:///OUT/optuna.db``, Optuna's embedded storage). Any
SQLAlchemy URL works, e.g. ``postgresql://user:password@host:5432/kdlab``: every worker that runs the same command
with the same URL joins the same Optuna study, on any machine.

Crashed workers: trials record a heartbeat every :data:`HEARTBEAT_SECONDS`; a trial whose heartbeat is older than
:data:`GRACE_SECONDS` is failed by the next worker that asks for work (``optuna.storages.fail_stale_trials``) and
re-queued with the same parameters (Optuna's retry callback), so a killed worker's trial is done again by someone
else, once.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from kdlab.errors import KdlabError

HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 30
OPEN_ATTEMPTS = 5


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise KdlabError("this command needs optuna: pip install 'optuna>=3.6'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # kdlab reports trials itself
    import warnings

    # heartbeats, their retry callback and fail_stale_trials are marked experimental, and heartbeats outside
    # Study.optimize draw a warning: kdlab uses them on purpose (and records heartbeats itself, see Heartbeat)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def retry_callback(optuna):
    """Optuna's retry of stale trials, under its name in this Optuna version (renamed in 4.9)."""
    storages = optuna.storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return cls(max_retry=None)


def retried_from(optuna, trial) -> int | None:
    """The number of the trial that ``trial`` retries, or None for a first attempt."""
    storages = optuna.storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return cls.retried_trial_number(trial)


def default_url(out: Path) -> str:
    return f"sqlite:///{(out / 'optuna.db').absolute()}"


def driver_url(url: str) -> str:
    """``postgresql://`` names the psycopg (3) driver, which kdlab installs, whatever SQLAlchemy's default."""
    return "postgresql+psycopg://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS):
    """An RDB storage for ``url`` with heartbeats and the retry of stale trials; a bad URL or an unreachable server
    is a one-line error."""
    optuna = import_optuna()
    shown, url = url, driver_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    callback = retry_callback(optuna)
    import inspect

    parameters = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters else "failed_trial_callback"
    import warnings

    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats are marked experimental by Optuna
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=grace, **{name: callback})
        except ImportError as error:
            raise KdlabError(f"--storage {_redacted(shown)}: the database driver is missing ({error}); for "
                             f"PostgreSQL: pip install 'psycopg[binary]'") from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's errors: bad URL, refused connection, password
            # Workers starting together race to create Optuna's tables; the loser finds them on a second try.
            racing = any(word in str(error).lower() for word in ("unique", "already exists", "duplicate", "locked"))
            if attempt + 1 < OPEN_ATTEMPTS and racing:
                time.sleep(0.2 + random.random())
                continue
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise KdlabError(f"--storage {_redacted(shown)}: cannot open the storage: {reason}") from None


def _redacted(url: str) -> str:
    """``url`` without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


class Heartbeat:
    """Records a trial's heartbeat from a background thread while work on it runs (ask/tell loops; Optuna's own
    ``optimize`` does this itself)."""

    def __init__(self, storage, trial_id: int, every: float = HEARTBEAT_SECONDS):
        self.storage, self.trial_id, self.every = storage, trial_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the work must not die of it
                pass

    def __enter__(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker_count(requested: int | None) -> int:
    if requested is None:
        return 1
    if requested < 1:
        raise KdlabError(f"--workers must be >= 1, got {requested}")
    return requested

