"""The exceptions the package raises. Every one is a StorytellerError, so a caller (the CLI,
the daemon) can catch one type and show its message: messages are single readable lines.

The C library's l2_status codes map one to one onto the first group (engine.py raises them,
with the library's own message): each class names its code as llama2_rvv.h does, and the
number is the library's (lib.L2_ERR_*), never a copy. The rest are the Python layers' own.
"""

from __future__ import annotations


class StorytellerError(Exception):
    """Base class: a failure with a message fit to show the user as one line."""


# ---- the C library's status codes (l2_status) -------------------------------------------


class LibraryError(StorytellerError):
    """A libllama2_rvv call failed; `status` is its l2_status, the message its l2_error."""

    c_name = ""  # the l2_status it stands for, as llama2_rvv.h names it

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._status = status

    @property
    def status(self) -> int:
        """The l2_status (from the library, by c_name); -1 for a code the library lacks."""
        if self._status is None:
            from storyteller import _native

            self._status = int(getattr(_native.load()[1], self.c_name, -1))
        return self._status


class ModelFileError(LibraryError):
    """L2_ERR_IO: a model or tokenizer file cannot be opened, read, mapped or written."""

    c_name = "L2_ERR_IO"


class FormatError(LibraryError):
    """L2_ERR_FORMAT: a malformed, truncated or unsupported file."""

    c_name = "L2_ERR_FORMAT"


class OutOfMemoryError(LibraryError, MemoryError):
    """L2_ERR_NOMEM: an allocation failed."""

    c_name = "L2_ERR_NOMEM"


class ArgumentError(LibraryError, ValueError):
    """L2_ERR_ARG: an invalid argument (option, token id, context size, ...)."""

    c_name = "L2_ERR_ARG"


class ContextFullError(LibraryError):
    """L2_ERR_RANGE: the tokens do not fit the session's context."""

    c_name = "L2_ERR_RANGE"


class NumericError(LibraryError, ArithmeticError):
    """L2_ERR_NUMERIC: the model produced NaN or infinity."""

    c_name = "L2_ERR_NUMERIC"


class EvalCancelledError(LibraryError):
    """L2_ERR_CANCELLED: Session.cancel() stopped an eval(); the session evaluates again once
    reset() (a generation stopped so just ends, without this error)."""

    c_name = "L2_ERR_CANCELLED"


class SessionBusyError(LibraryError):
    """L2_ERR_BUSY: the session is in use by another thread (a call or a generation step is
    running); nothing was done. A session serves one thread at a time."""

    c_name = "L2_ERR_BUSY"


STATUS_ERRORS: dict[str, type[LibraryError]] = {
    cls.c_name: cls
    for cls in (ModelFileError, FormatError, OutOfMemoryError, ArgumentError, ContextFullError, NumericError,
                EvalCancelledError, SessionBusyError)
}


def error_for_status(status: int, message: str) -> LibraryError:
    """The exception for a failed C call (an unknown code gives a plain LibraryError)."""
    from storyteller import _native

    ffi, _ = _native.load()
    cls = STATUS_ERRORS.get(ffi.typeof("l2_status").elements.get(status, ""))
    if cls is None:
        return LibraryError(message or f"libllama2_rvv failed with status {status}", status)
    return cls(message or f"libllama2_rvv failed ({cls.__name__})", status)


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
