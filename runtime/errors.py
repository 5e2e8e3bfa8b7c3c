"""The one error base of both services: a refusal that names its gRPC status.

A use-case refuses by raising one of these; nothing was changed. ``message`` is written
for whoever operates the service (a district or the bureau): what was wrong and what to
do. ``reason`` is a stable machine-readable code (UPPER_SNAKE) that programs branch on;
it travels as the ``google.rpc.ErrorInfo`` reason of the status (``runtime.rpcstatus``).
The classes carry the status as a plain name so that the domain layers that raise them
need not import gRPC.

``ConfigError`` is the other kind of error an operator reads: not a refused request but
a file they wrote (a service's configuration, the city policy, a key or secret file it
names) that cannot be used.
"""

from __future__ import annotations


class Refusal(Exception):
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


class InvalidArgument(Refusal):
    status = "INVALID_ARGUMENT"


class NotFound(Refusal):
    status = "NOT_FOUND"


class FailedPrecondition(Refusal):
    status = "FAILED_PRECONDITION"


class AlreadyExists(Refusal):
    status = "ALREADY_EXISTS"


class Unauthenticated(Refusal):
    """The caller could not be told who it is: no credential, or one that is expired,
    revoked or not this service's (log in again)."""

    status = "UNAUTHENTICATED"


class PermissionDenied(Refusal):
    status = "PERMISSION_DENIED"


class ResourceExhausted(Refusal):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(Refusal):
    """The store or a peer is busy or away: the same request may succeed if retried."""

    status = "UNAVAILABLE"


class InvariantViolation(AssertionError):
    """A rule that must always hold did not: a bug, never a user's mistake."""


class ConfigError(ValueError):
    """A configuration cannot be used; the message names the setting or file and why."""


__all__ = ["AlreadyExists", "ConfigError", "FailedPrecondition", "InvalidArgument",
           "InvariantViolation", "NotFound", "PermissionDenied", "Refusal", "ResourceExhausted",
           "Unauthenticated", "Unavailable"]
