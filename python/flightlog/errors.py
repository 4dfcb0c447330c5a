"""Exceptions raised by flightlog.

Every error a caller can cause is a :class:`FlightlogError` and also a subclass of the matching built-in exception
(``ValueError`` for bad input and rule violations, ``LookupError`` for unknown ids, ``ConnectionError`` for a server
that cannot be reached), so ``except ValueError`` keeps working in code that does not know flightlog.

Logging calls (``run.log`` and its siblings) never raise for network trouble: delivery problems are reported by a
:class:`DeliveryWarning` (once) and in ``run.get_details()["delivery"]``.
"""

from __future__ import annotations

__all__ = [
    "FlightlogError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "ConflictError",
    "IllegalTransitionError",
    "DeletedError",
    "InvalidPathError",
    "TooLargeError",
    "StorageError",
    "TransportError",
    "DeliveryWarning",
    "from_code",
]


class FlightlogError(Exception):
    """Base class of every flightlog error; ``code`` is the API's machine-readable error code."""

    code = "ERROR"


class InvalidArgumentError(FlightlogError, ValueError):
    """A value breaks a rule: an empty or over-long name, control characters, a wrong type..."""

    code = "INVALID_ARGUMENT"


class NotFoundError(FlightlogError, LookupError):
    """The run, experiment, metric or file asked for does not exist."""

    code = "NOT_FOUND"


class AlreadyExistsError(FlightlogError, ValueError):
    """A create collided with an existing thing of the same name or id."""

    code = "ALREADY_EXISTS"


class ConflictError(FlightlogError, ValueError):
    """A write contradicts what is stored: a property rewritten with another value, a metric logged as another
    kind than before."""

    code = "CONFLICT"


class IllegalTransitionError(FlightlogError, ValueError):
    """A run status change the lifecycle does not allow (e.g. completing a failed run)."""

    code = "ILLEGAL_TRANSITION"


class DeletedError(FlightlogError, ValueError):
    """A write to a deleted run or experiment."""

    code = "DELETED"


class InvalidPathError(FlightlogError, ValueError):
    """An artifact path that is absolute, contains ``..`` or would leave the run's storage."""

    code = "INVALID_PATH"


class TooLargeError(FlightlogError, ValueError):
    """A value or request bigger than the server accepts."""

    code = "TOO_LARGE"


class StorageError(FlightlogError, OSError):
    """The storage layer failed (disk full, corrupt file...): not the caller's fault."""

    code = "STORAGE_ERROR"


class TransportError(FlightlogError, ConnectionError):
    """The tracking server could not be reached or answered unexpectedly."""

    code = "TRANSPORT_ERROR"


class DeliveryWarning(UserWarning):
    """Logged data could not be delivered yet (server down or unreachable); it is kept and retried."""


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        ConflictError,
        IllegalTransitionError,
        DeletedError,
        InvalidPathError,
        TooLargeError,
        StorageError,
        TransportError,
    )
}


def from_code(code: str, message: str) -> FlightlogError:
    """The exception instance for an API error ``code`` (used by the native module)."""
    return _BY_CODE.get(code, FlightlogError)(message)
