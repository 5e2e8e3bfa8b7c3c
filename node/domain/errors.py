"""The errors a use-case can raise, each meaning one gRPC status.

Messages are written for a district operator: what was wrong and what to do.
``reason`` is a stable machine-readable code (UPPER_SNAKE) for apps.
"""

from __future__ import annotations


class NodeError(Exception):
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


class InvalidArgument(NodeError):
    status = "INVALID_ARGUMENT"


class NotFound(NodeError):
    status = "NOT_FOUND"


class FailedPrecondition(NodeError):
    status = "FAILED_PRECONDITION"


class AlreadyExists(NodeError):
    status = "ALREADY_EXISTS"


class PermissionDenied(NodeError):
    status = "PERMISSION_DENIED"


class ResourceExhausted(NodeError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(NodeError):
    """The store is busy or down; retrying later may help."""

    status = "UNAVAILABLE"


class InvariantViolation(AssertionError):
    """A rule that must always hold did not: a bug, never a user's mistake."""
