"""``kdlab runs``: every run directory under some folders, one row each, with the state it is really in.

A run's ``summary.json`` says what the training process last wrote, which is not always the truth: a process
killed by SIGKILL, the OOM killer or a reboot leaves ``status: running`` behind. The run's ``.lock`` settles it
(:func:`kdlab.analysis.run_files.probe_lock`): the kernel drops the lock with its process, so

=====================  =======================================================================================
``running``            a live process holds ``.lock`` (whatever the summary says: a resume is under way)
``died``               the summary says running (or there is no summary yet) and nobody holds ``.lock``: the
                       process was killed; ``kdlab train --resume DIR`` continues from the last checkpoint
``completed``          as the summary says; so are ``failed`` (diverged, disk full), ``interrupted`` (Ctrl-C)
                       and ``pruned`` (stopped by a tuning study), and any other word a summary holds
``not started``        what a run leaves when it is stopped before its config.yaml was written
``unreadable summary.json``  the file is there but is not a summary (corrupt, truncated by hand)
=====================  =======================================================================================

The rows are plain dicts (``--json`` prints them), built from the run-directory readers of
:mod:`kdlab.analysis.run_files`; :func:`format_table` lays them out for a terminal.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kdlab.analysis.run_files import LockProbe, probe_lock, read_config, read_history, read_summary, UNREADABLE_SUMMARY
from kdlab.errors import KdlabError
from kdlab.store.rundir import RunDir

RUNNING, DIED, NOT_STARTED = "running", "died", "not started"
STATES = (RUNNING, DIED, "completed", "failed", "interrupted", "pruned", NOT_STARTED, UNREADABLE_SUMMARY)
#: what a finished (or stopped) run's summary says; its file time is when it finished
FINISHED = ("completed", "failed", "interrupted", "pruned")
KEY_METRICS = ("test_acc", "test_ece", "test_nll")
DEFAULT_FOLDER = "runs"


# ---------------------------------------------------------------------------------------------------- finding runs


def is_run_dir(path: Path) -> bool:
    """A kdlab run directory: it has a config.yaml or a summary.json, or it is what a run stopped before its
    config leaves (its ``.lock`` and an empty checkpoint/)."""
    run = RunDir(path)
    return run.config.is_file() or run.summary.is_file() or run._started_but_empty()


def find_runs(folders: list[str | Path], command: str = "runs") -> list[Path]:
    """Every run directory under ``folders`` (each a run directory itself, a study, a pipeline or any folder of
    them, searched recursively but never inside a run), without repeats, in the order found. A folder that does not
    exist or holds no run is a one-line error."""
    found: dict[str, Path] = {}
    for folder in map(Path, folders):
        if not folder.exists():
            raise KdlabError(f"{command}: {folder} does not exist")
        if not folder.is_dir():
            raise KdlabError(f"{command}: {folder} is not a folder (give run directories or folders of them)")
        runs = list(_walk(folder))
        if not runs:
            raise KdlabError(f"{command}: no kdlab run directories under {folder} (a run directory has a config.yaml "
                             f"or a summary.json)")
        for path in runs:
            found.setdefault(os.path.abspath(path), path)
    return list(found.values())


def _walk(folder: Path):
    for current, children, _ in os.walk(folder):
        path = Path(current)
        if is_run_dir(path):
            children.clear()  # checkpoint/, predictions/, eval-*/ belong to the run
            yield path
        else:
            children[:] = sorted(child for child in children if not child.startswith("."))


# ---------------------------------------------------------------------------------------------------- one run


@dataclass
class RunView:
    """One run directory as read now: its files (each None or empty when unreadable), its lock and its state."""

    path: Path
    summary: dict | None
    history: list[dict]
    config: dict | None
    lock: LockProbe
    state: str
    problems: list[str] = field(default_factory=list)

    @property
    def metrics_record(self) -> dict | None:
        """Where the key metrics come from: the summary's final record (its last epoch), or while running or when
        the summary has none, the last epoch of metrics.jsonl that was evaluated (``train.eval_every``)."""
        final = (self.summary or {}).get("final")
        if self.state != RUNNING and isinstance(final, dict) and any(k in final for k in KEY_METRICS):
            return final
        evaluated = [record for record in self.history if any(k in record for k in KEY_METRICS)]
        if evaluated:
            return evaluated[-1]
        return final if isinstance(final, dict) else None


def inspect_run(path: Path) -> RunView:
    """Read ``path`` and decide its state (see the module docstring)."""
    run = RunDir(path)
    summary, summary_problem = read_summary(run)
    history, history_problem = read_history(run)
    config, config_problem = read_config(run)
    lock = probe_lock(path)
    problems = [p for p in (summary_problem, history_problem, config_problem) if p]
    status = summary.get("status") if summary is not None else None
    if lock.held:
        state = RUNNING
    elif summary_problem:
        state = UNREADABLE_SUMMARY
    elif summary is None:
        state = DIED if run.config.is_file() else NOT_STARTED  # killed before its first record / before its config
    elif status == RUNNING:
        state = RUNNING if lock.held is None else DIED
    else:
        state = status
    if lock.held is None and state == RUNNING:
        problems.append("cannot check .lock here")
    return RunView(path, summary, history, config, lock, state, problems)


def teacher_name(config: dict | None, summary: dict | None) -> str | None:
    """The teacher's name: the folder name of a teacher run (``method.teacher``; several: ``method.teachers``),
    a library teacher's model name; None for methods without one. Read from config.yaml, or from the summary's
    record of the same method section when config.yaml cannot be read."""
    method = (config or {}).get("method")
    if not isinstance(method, dict):
        method = (summary or {}).get("method_params")
    if not isinstance(method, dict):
        return None
    teachers = method.get("teachers") if isinstance(method.get("teachers"), list) else [method.get("teacher")]
    names = [_one_teacher(teacher) for teacher in teachers if teacher]
    return ", ".join(names) or None


def _one_teacher(teacher) -> str:
    if isinstance(teacher, dict):
        return str(teacher.get("model") or "library teacher")
    return Path(str(teacher)).name or str(teacher)


def run_row(view: RunView, root: Path | None = None) -> dict:
    """The listing's row of one run: every field, JSON-ready (non-finite numbers as None)."""
    summary, config = view.summary or {}, view.config or {}
    record = view.metrics_record or {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    epochs_done = summary.get("epochs_completed")
    last_epoch = view.history[-1].get("epoch") if view.history else None
    if isinstance(last_epoch, int) and (view.state == RUNNING or not isinstance(epochs_done, int)):
        epochs_done = last_epoch  # metrics.jsonl is written before the summary each epoch: it is never behind
    started = _file_time(RunDir(view.path).config)
    updated = _file_time(RunDir(view.path).summary)
    return {
        "path": display_path(view.path, root),
        "state": view.state,
        "status": summary.get("status"),
        "problems": list(view.problems),
        "method": summary.get("method") or method.get("name"),
        "model": summary.get("model") or model.get("name"),
        "dataset": summary.get("dataset"),
        "seed": summary.get("seed", config.get("seed")),
        "teacher": teacher_name(view.config, view.summary),
        "epoch": epochs_done,
        "epochs": summary.get("epochs") or train.get("epochs"),
        "metrics_epoch": record.get("epoch"),
        **{key: finite(record.get(key)) for key in KEY_METRICS},
        "wall_seconds": finite(summary.get("wall_seconds")),
        "started": started,
        "updated": updated,
        "finished": updated if view.state in FINISHED else None,
        "error": summary.get("error"),
        "lock_owner": view.lock.owner,
        "hint": _hint(view, root),
    }


def _hint(view: RunView, root: Path | None) -> str | None:
    if view.state in (DIED, "interrupted"):
        return f"kdlab train --resume {display_path(view.path, root)}"
    return None


def display_path(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` (default the working directory) when it lies under it, else as found."""
    base = os.path.abspath(root or os.getcwd())
    absolute = os.path.abspath(path)
    if absolute == base:
        return "."
    return os.path.relpath(absolute, base) if absolute.startswith(base + os.sep) else str(path)


def finite(value) -> float | int | None:
    """A number as JSON can carry it: NaN and infinities (a diverged run's) become None, non-numbers too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def plain(value):
    """``value`` made strict-JSON-safe all the way down: non-finite floats as None, anything JSON has no word for
    (a date a hand-edited YAML file grew) as text."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, float):
        return finite(value)
    return value if value is None or isinstance(value, (str, int)) else str(value)


def _file_time(path: Path) -> str | None:
    """When a file was last written, local time to the second. The summary records no clock times, so the start is
    config.yaml's time (written once, when a run starts) and the finish summary.json's last write; a copied or
    archived run shows when it was copied."""
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------- the listing


def list_runs(folders: list[str | Path], statuses: list[str] | None = None) -> list[dict]:
    """The rows of every run under ``folders``, sorted by path, only those in ``statuses`` when given (state names
    of :data:`STATES`, ``not-started`` for ``not started``, ``unreadable`` for ``unreadable summary.json``, or any
    other word a summary holds)."""
    rows = sorted((run_row(inspect_run(path)) for path in find_runs(folders)), key=lambda row: row["path"])
    if not statuses:
        return rows
    wanted = {_state_name(word) for text in statuses for word in text.split(",") if word.strip()}
    unknown = sorted(wanted - set(STATES) - {row["state"] for row in rows})
    if unknown:
        raise KdlabError(f"runs --status: unknown state {unknown[0]!r} (one of {', '.join(map(_option, STATES))})")
    return [row for row in rows if row["state"] in wanted]


def _state_name(word: str) -> str:
    word = word.strip().lower()
    if word in ("not-started", "not_started"):
        return NOT_STARTED
    return UNREADABLE_SUMMARY if word == "unreadable" else word


def _option(state: str) -> str:
    return {NOT_STARTED: "not-started", UNREADABLE_SUMMARY: "unreadable"}.get(state, state)


COLUMNS = ("path", "state", "method", "model", "teacher", "epoch", *KEY_METRICS, "wall", "started", "finished")


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, with a line of counts per state and what to do about died runs."""
    cells = [COLUMNS] + [tuple(_cells(row)) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append("")
    lines.append(f"{len(rows)} run{'s' * (len(rows) != 1)}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if DIED in counts:
        lines.append("died: killed while training (no process holds its .lock); continue it with "
                     "kdlab train --resume DIR")
    return "\n".join(lines)


def _cells(row: dict):
    yield row["path"]
    yield "; ".join([row["state"]] + [p for p in row["problems"] if p != row["state"]])
    for key in ("method", "model", "teacher"):
        yield str(row[key]) if row[key] is not None else "-"
    done, total = row["epoch"], row["epochs"]
    yield f"{'-' if done is None else done}/{'-' if total is None else total}" if done is not None or total else "-"
    for key in KEY_METRICS:
        yield f"{row[key]:.4f}" if row[key] is not None else "-"
    yield format_seconds(row["wall_seconds"])
    for key in ("started", "finished"):
        yield row[key].replace("T", " ")[:16] if row[key] else "-"


def format_seconds(seconds: float | None) -> str:
    """75.1 -> "1m15s", 3725 -> "1h02m", 8.2 -> "8s"."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
