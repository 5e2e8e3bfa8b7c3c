"""The errors a clearinghouse use-case can raise, each meaning one gRPC status.

Messages are written for an operator (the bureau or a district): what was wrong and
what to do. ``reason`` is a stable machine-readable code (UPPER_SNAKE) for programs.
The clearinghouse never imports the node, so these mirror ``node.domain.errors``.
"""

from __future__ import annotations


class ClearinghouseError(Exception):
    """Base: a request that was refused and changed nothing."""

    status = "INTERNAL"

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason()

    @classmethod
    def default_reason(cls) -> str:
        return cls.status

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ClearinghouseError):
    status = "INVALID_ARGUMENT"


class NotFound(ClearinghouseError):
    status = "NOT_FOUND"


class FailedPrecondition(ClearinghouseError):
    status = "FAILED_PRECONDITION"


class AlreadyExists(ClearinghouseError):
    status = "ALREADY_EXISTS"


class PermissionDenied(ClearinghouseError):
    status = "PERMISSION_DENIED"


class ResourceExhausted(ClearinghouseError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(ClearinghouseError):
    """The database is busy or unreachable: the request may succeed if retried."""

    status = "UNAVAILABLE"


class InvariantViolation(AssertionError):
    """A rule that must always hold did not: a bug, never a user's mistake."""
