"""The exceptions the package raises. Every one is a StorytellerError, so a caller (the CLI,
the daemon) can catch one type and show its message: messages are single readable lines.

The C library's l2_status codes map one to one onto the first group (engine.py raises them,
with the library's own message); the rest are the Python layers' own errors.
"""

from __future__ import annotations


class StorytellerError(Exception):
    """Base class: a failure with a message fit to show the user as one line."""


# ---- the C library's status codes (l2_status) -------------------------------------------


class LibraryError(StorytellerError):
    """A libllama2_rvv call failed; `status` is its l2_status, the message its l2_error."""

    status = -1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelFileError(LibraryError):
    """L2_ERR_IO: a model or tokenizer file cannot be opened, read, mapped or written."""

    status = 1


class FormatError(LibraryError):
    """L2_ERR_FORMAT: a malformed, truncated or unsupported file."""

    status = 2


class OutOfMemoryError(LibraryError, MemoryError):
    """L2_ERR_NOMEM: an allocation failed."""

    status = 3


class ArgumentError(LibraryError, ValueError):
    """L2_ERR_ARG: an invalid argument (option, token id, context size, ...)."""

    status = 4


class ContextFullError(LibraryError):
    """L2_ERR_RANGE: the tokens do not fit the session's context."""

    status = 5


class NumericError(LibraryError, ArithmeticError):
    """L2_ERR_NUMERIC: the model produced NaN or infinity."""

    status = 6


class EvalCancelledError(LibraryError):
    """L2_ERR_CANCELLED: Session.cancel() stopped an eval(); the session evaluates again once
    reset() (a generation stopped so just ends, without this error)."""

    status = 7


class SessionBusyError(LibraryError):
    """L2_ERR_BUSY: the session is in use by another thread (a call or a generation step is
    running); nothing was done. A session serves one thread at a time."""

    status = 8


STATUS_ERRORS: dict[int, type[LibraryError]] = {
    cls.status: cls
    for cls in (ModelFileError, FormatError, OutOfMemoryError, ArgumentError, ContextFullError, NumericError,
                EvalCancelledError, SessionBusyError)
}


def error_for_status(status: int, message: str) -> LibraryError:
    """The exception for a failed C call (an unknown code gives a plain LibraryError)."""
    cls = STATUS_ERRORS.get(status)
    if cls is None:
        err = LibraryError(message or f"libllama2_rvv failed with status {status}")
        err.status = status
        return err
    return cls(message or f"libllama2_rvv failed ({cls.__name__})")


# ---- the Python layers ------------------------------------------------------------------


class LibraryNotFoundError(StorytellerError):
    """Neither the compiled extension nor a libllama2_rvv.so could be loaded."""


class VocabMismatchError(StorytellerError):
    """The tokenizer's vocabulary is not the model's."""


class ModelNotFoundError(StorytellerError):
    """No model (or tokenizer) file where one was expected."""


class TopicError(StorytellerError):
    """The story topic cannot be used (empty, too long)."""


class TopicRefusedError(StorytellerError):
    """The topic is not for children: `refusal` says so politely, `alternative` is a topic
    to offer instead."""

    def __init__(self, refusal: str, alternative: str) -> None:
        super().__init__(refusal)
        self.refusal = refusal
        self.alternative = alternative


class DownloadError(StorytellerError):
    """A model could not be downloaded or failed its checksum."""


class NoNetworkError(DownloadError):
    """The download server cannot be reached (the message says what to put where)."""


class ConfigError(StorytellerError):
    """The settings file is unreadable or holds a bad value."""
