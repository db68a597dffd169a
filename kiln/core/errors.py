"""The one error type for user mistakes.

A `KilnError` carries a message meant for the person who wrote the config or
typed the command: what is wrong and how to fix it. The CLI prints it without a
traceback and exits with code 2. Anything else escaping is a bug (exit 1).
"""


class KilnError(ValueError):
    """A user mistake: bad config, bad data, bad checkpoint, bad arguments."""


class CorruptCheckpoint(KilnError):
    """A checkpoint whose content no longer matches its checksum (a file, or a sharded folder's manifest)."""


class TrainingStopped(RuntimeError):
    """Training stopped early for a reason the user must hear about (e.g. NaN loss)."""

    what = "training stopped"  # how the CLI introduces the message


class CheckFailed(TrainingStopped):
    """Work that was done but failed its own check (an export that does not match its model): nothing was kept."""

    what = "check failed"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line messages."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def write_failed(path: object, error: OSError) -> TrainingStopped:
    """A run's own file could not be written (disk full, read-only, permissions): stop, and say what to do."""
    return TrainingStopped(f"cannot write {path}: {error.strerror or error}. The last checkpoint written before "
                           "stays intact; free space or fix the folder's permissions, then resume with "
                           "kiln train --resume RUN_DIR")


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: the current step finished and last.pt was written (exit code 130). `preempted`: SLURM's
    warning signal (SIGUSR1, `#SBATCH --signal=USR1@120`): exit code 75 (EX_TEMPFAIL), which a requeued job
    resumes from with --resume auto. `run`: the run folder that was saved (set once the run folder is known)."""

    def __init__(self, message: str = "", preempted: bool = False, run: str | None = None):
        super().__init__(message)
        self.preempted, self.run = preempted, run
