"""The client's errors: one class per error code of the API.

An error answer ``{"error": {"code", "message"}}`` becomes an instance of the class
registered for its code (``LeaseLost`` for ``lease_lost``); a code this client does
not know becomes the class for its HTTP status (``Conflict`` for an unknown 409,
``Unavailable`` for an unknown 503), or ``ApiError``. Every API error has ``status``,
``code``, ``message`` and ``retry_after`` (seconds, from ``Retry-After``, or None).

Errors that did not come from an answer: ``TransportError`` (the request could not be
sent or its answer not read) and ``DecodeError`` (a 2xx whose body is not the JSON the
API documents).
"""


class SlctError(Exception):
    """Every error this package raises."""


class TransportError(SlctError):
    """The request could not be sent, or its answer not read.

    ``connected`` is False when no connection was made (the request never reached a
    node, so it changed nothing); True when it failed later, so a write may have been
    applied.
    """

    def __init__(self, message, connected):
        super().__init__(message)
        self.connected = connected

    @property
    def outcome_unknown(self):
        """Whether a write that failed this way may nevertheless have been applied."""
        return self.connected


class DecodeError(SlctError):
    """A 2xx answer whose body is not what the API documents."""


class ApiError(SlctError):
    """An error answer from a node."""

    #: The code this class stands for (None for the classes of a whole status).
    code_name = None

    def __init__(self, status, code, message, retry_after=None):
        super().__init__("%s (%d %s)" % (message, status, code or "no code"))
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def nothing_applied(self):
        """Whether the code guarantees the request changed nothing (so it may be sent
        again, whatever it was)."""
        return False

    @property
    def outcome_unknown(self):
        """Whether a write that failed this way may nevertheless have been applied."""
        return False


# 400
class BadRequest(ApiError):
    """400: a malformed request or an invalid field."""


class Invalid(BadRequest):
    """400 ``invalid``: an invalid field, path or query value."""
    code_name = "invalid"


class InvalidJson(BadRequest):
    """400 ``invalid_json``: the body is not JSON."""
    code_name = "invalid_json"


class TooDeep(BadRequest):
    """400 ``too_deep``: JSON nested deeper than the node allows."""
    code_name = "too_deep"


class Unauthorized(ApiError):
    """401 ``unauthorized``: no token, or not one the node knows."""
    code_name = "unauthorized"


class Forbidden(ApiError):
    """403 ``forbidden``: this token may not do this (membership needs the admin token)."""
    code_name = "forbidden"


class NotFound(ApiError):
    """404 ``not_found``: no such state, channel or member."""
    code_name = "not_found"


class MethodNotAllowed(ApiError):
    """405 ``method_not_allowed``."""
    code_name = "method_not_allowed"


class Timeout(ApiError):
    """408 ``timeout``: a blocking send or receive found no partner and was withdrawn."""
    code_name = "timeout"


# 409
class ConflictError(ApiError):
    """409: the request conflicts with the current state of things."""


class Exists(ConflictError):
    """409 ``exists``: the state exists (a PUT without a lease), or the channel exists
    with another capacity."""
    code_name = "exists"


class LeaseLost(ConflictError):
    """409 ``lease_lost``: the lease expired or is not the current one; nothing changed."""
    code_name = "lease_lost"


class Closed(ConflictError):
    """409 ``closed``: the channel is closed."""
    code_name = "closed"


class WouldBlock(ConflictError):
    """409 ``would_block``: a try-send or try-receive could not complete now."""
    code_name = "would_block"


class Conflict(ConflictError):
    """409 ``conflict``: another conflict (a retry of a state that has not failed, a
    membership change that is not allowed)."""
    code_name = "conflict"


class TooLarge(ApiError):
    """413 ``too_large``: the body, or the command it makes, is too large."""
    code_name = "too_large"


# 422
class Unprocessable(ApiError):
    """422: a request that breaks the rules."""


class InvalidUpdate(Unprocessable):
    """422 ``invalid_update``: an update that drops or changes a blocked select."""
    code_name = "invalid_update"


class CallbackNotAllowed(Unprocessable):
    """422 ``callback_not_allowed``: the callback url is outside ``--callback-allow``."""
    code_name = "callback_not_allowed"


class IdempotencyKeyReused(Unprocessable):
    """422 ``idempotency_key_reused``: the key was used with another request."""
    code_name = "idempotency_key_reused"


class TooManyWaiters(ApiError):
    """429 ``too_many_waiters``: the channel or node has all the parked HTTP operations
    it may."""
    code_name = "too_many_waiters"


class Internal(ApiError):
    """500 ``internal``: a bug in the node (it should never answer this)."""
    code_name = "internal"


# 503
class Unavailable(ApiError):
    """503: the cluster cannot answer now; ``retry_after`` says when to try again."""
    code_name = "unavailable"

    @property
    def nothing_applied(self):
        return self.code in NOTHING_APPLIED

    @property
    def outcome_unknown(self):
        return not self.nothing_applied


class NoLeader(Unavailable):
    """503 ``no_leader``: no leader is known (an election); nothing was applied."""
    code_name = "no_leader"


class NotLeader(Unavailable):
    """503 ``not_leader``: the node asked is not the leader; nothing was applied."""
    code_name = "not_leader"


class LeaderUnreachable(Unavailable):
    """503 ``leader_unreachable``: the node could not forward to the leader, or lost
    its answer; a write may have been applied."""
    code_name = "leader_unreachable"


class NoQuorum(Unavailable):
    """503 ``no_quorum``: a linearizable read could not reach a quorum."""
    code_name = "no_quorum"


class NotReady(Unavailable):
    """503 ``not_ready``: the node is not ready (``/readyz``)."""
    code_name = "not_ready"


class ShuttingDown(Unavailable):
    """503 ``shutting_down``: the node is stopping."""
    code_name = "shutting_down"


class Storage(Unavailable):
    """503 ``storage``: the node's storage failed."""
    code_name = "storage"


class OutcomeUnknown(Unavailable):
    """503 ``outcome_unknown``: a write not confirmed within the node's write timeout;
    it may or may not have been applied."""
    code_name = "outcome_unknown"


class ClockJump(Unavailable):
    """503 ``clock_jump``: the leader's clock is far ahead of log time; nothing was
    applied."""
    code_name = "clock_jump"


class DiskFull(ApiError):
    """507 ``disk_full``: a voter's disk is below its free-space reserve; the write was
    refused before it was proposed, so it was not applied. Deletes and receives go on;
    other writes resume once an operator makes room."""
    code_name = "disk_full"


#: Codes of a 503 that guarantee the request was not applied.
NOTHING_APPLIED = frozenset(["no_leader", "not_leader", "no_quorum", "not_ready", "clock_jump"])

_BY_CODE = {
    cls.code_name: cls
    for cls in [
        Invalid, InvalidJson, TooDeep, Unauthorized, Forbidden, NotFound, MethodNotAllowed,
        Timeout, Exists, LeaseLost, Closed, WouldBlock, Conflict, TooLarge, InvalidUpdate,
        CallbackNotAllowed, IdempotencyKeyReused, TooManyWaiters, Internal, Unavailable,
        NoLeader, NotLeader, LeaderUnreachable, NoQuorum, NotReady, ShuttingDown, Storage,
        OutcomeUnknown, ClockJump, DiskFull,
    ]
}

_BY_STATUS = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    408: Timeout, 409: ConflictError, 413: TooLarge, 422: Unprocessable, 429: TooManyWaiters,
    500: Internal, 503: Unavailable, 507: DiskFull,
}


def from_answer(status, code, message, retry_after=None):
    """The error for a non-2xx answer."""
    cls = _BY_CODE.get(code)
    if cls is None or _BY_STATUS.get(status) not in cls.__mro__:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(status, code, message, retry_after)
