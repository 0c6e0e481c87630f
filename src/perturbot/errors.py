"""The project's own errors: a message that says what is wrong and what to do is all a user needs.

A job (:func:`perturbot.logs.log_to_file`) and the command line show a
:class:`ClearError` as one line, to the job's log and to stderr; every other
exception, a ``ValueError`` from numpy or pandas included, is a bug somewhere
and keeps its traceback. So a new clear error subclasses :class:`ClearError`
(and, where callers expect it, ``ValueError``); nothing is relabelled by type.
"""

from __future__ import annotations


class ClearError(Exception):
    """An error whose message is the whole story (bad config, bad data, a failed download)."""

    #: How a job's log introduces the message ("Data error in experiment 'x': ...").
    kind = "Error"


class DataError(ClearError, ValueError):
    """The data do not match what the config says about them."""

    kind = "Data error"


class DownloadError(DataError):
    """A dataset file could not be downloaded, verified or extracted."""

    kind = "Download error"


def describe(err: ClearError, context: str | None = None) -> str:
    """The one line a job or the command line shows for a clear error."""
    where = f" in {context}" if context else ""
    return f"{err.kind}{where}: {err}"
