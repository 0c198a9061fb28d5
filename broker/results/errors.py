"""Errors of result lookups (Dramatiq's names)."""

from __future__ import annotations

from broker.errors import BrokerError


class ResultError(BrokerError):
    """Base class of the result errors."""


class ResultMissing(ResultError):
    """No result (yet, or any more: results expire) and the caller did not wait."""


class ResultTimeout(ResultError):
    """No result arrived within the time the caller waited."""


class ResultFailure(ResultError):
    """The actor failed for good (its message was dead-lettered); ``orig_exc_type`` and
    ``orig_exc_msg`` say how."""

    def __init__(self, message: str = "", orig_exc_type: str = "", orig_exc_msg: str = "") -> None:
        super().__init__(message)
        self.orig_exc_type = orig_exc_type
        self.orig_exc_msg = orig_exc_msg
