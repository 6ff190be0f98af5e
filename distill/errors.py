from __future__ import annotations


class DataError(ValueError):
    """A data source that is missing, unreadable or malformed."""


class TeacherError(ValueError):
    """A teacher that cannot be loaded or does not fit the data."""


class DistillError(RuntimeError):
    """Training that cannot go on, e.g. a loss that became NaN."""


class DeadlineReached(Exception):
    """Training stopped at its deadline with its state saved; running it again resumes it."""
