"""Caller-facing errors. Each maps to one HTTP status and a stable snake_case code.

Dependency failures (database down, encoder crashed) are not in this family: they are
retried by the one retry policy and then answered with 503 by the API middleware.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway refuses; the message says what went wrong and what to do."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def details(self) -> dict:
        """Machine-readable fields the error body carries beside code and message (none by default)."""
        return {}


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class InvalidFilter(InvalidRequest):
    """A metadata filter the filter language (domain/filters.py) does not accept; names the wrong path."""

    code = "invalid_filter"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class IllegalTransition(Conflict):
    """An operator action the migration's current phase does not allow."""

    code = "illegal_transition"


class AdoptionBroken(Conflict):
    """An adopted table changed under the gateway (a column retyped or dropped, access revoked,
    triggers removed): the adoption stops (state `failed`) until the table is put right."""

    code = "adoption_broken"


class IndexIncomplete(Conflict):
    """Reads or a shadow were asked of a model whose table is not complete and verified."""

    code = "index_incomplete"


class ModelDrift(GatewayError):
    """A model's files, parameters or outputs no longer match what its table was built with."""

    status = 409
    code = "model_drift"


class Unavailable(GatewayError):
    """A dependency failed after retries; the caller may try again later."""

    status = 503
    code = "unavailable"


class EncoderFailed(Unavailable):
    """The encoder could not embed (it crashed, or is overloaded); the caller may retry."""

    code = "encoder_unavailable"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class RequestTimeout(GatewayError):
    status = 504
    code = "request_timeout"


class EncoderBusy(Unavailable):
    """Too much interactive work is already queued for the model; the caller should retry later."""

    code = "encoder_busy"


class EncoderUnavailable(Unavailable):
    """A remote embedding provider is down, slow or rate-limiting us; `retry_after` is the wait in seconds.

    Not retried by the backfill as a document failure: the chunk rolls back and waits."""

    code = "encoder_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class EncoderBadReply(GatewayError):
    """A remote provider answered, but not with usable vectors (or refused the input); nothing is stored."""

    status = 502
    code = "encoder_bad_reply"


class Forbidden(GatewayError):
    """A valid credential that does not cover what was asked (an API key scoped to other collections)."""

    status = 403
    code = "forbidden"


class PayloadTooLarge(GatewayError):
    """A body bigger (in bytes or in JSON values) than the gateway parses; refused before parsing."""

    status = 413
    code = "payload_too_large"


class VectorOutOfRange(InvalidRequest):
    """A vector with a value beyond float16's range, bound for a `halfvec` table (nothing is written)."""

    code = "vector_out_of_range"


class BadLine(InvalidRequest):
    """A line of a bulk load that cannot be stored; nothing of its chunk is written."""

    code = "invalid_line"

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


class BulkLoadStopped(InvalidRequest):
    """A bulk load stopped at a bad line, after committing the chunks before it."""

    code = "invalid_line"

    def __init__(self, bad: BadLine, committed_lines: int, loaded: int) -> None:
        super().__init__(
            f"{bad.message}; nothing of its chunk was written. Lines 1-{committed_lines} are stored "
            f"({loaded} documents): fix the line and send the rest from line {committed_lines + 1} "
            "(or the whole input again: documents are upserted by id)"
        )
        self.line = bad.line
        self.committed_lines = committed_lines
        self.loaded = loaded

    @property
    def details(self) -> dict:
        return {"line": self.line, "committed_lines": self.committed_lines, "loaded": self.loaded}


# -- failures below the API --------------------------------------------------------------------
# Not GatewayErrors: the layer that catches each one says what it means to its caller (a 503
# naming the model, a CLI line, a 502), so none of them reaches a client as it is.


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists each one as 'field: reason'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"invalid configuration ({len(problems)} problem(s)): " + "; ".join(problems))
        self.problems = problems


class ModelFileMismatch(RuntimeError):
    """A cached or local file does not have the sha256 its spec pins (or the graph's output its dim)."""


class ModelFilesUnavailable(RuntimeError):
    """The files of a model are neither cached nor downloadable; the message says what to run."""


class CheckpointError(ValueError):
    """The checkpoint is incomplete, unsafe, or asks for something the converter does not support."""


class ImportRefused(ValueError):
    """The import cannot go ahead; the message says why and what to do."""


class BadReply(ValueError):
    """The provider's reply is malformed; the message names the problem."""


class ScenarioError(RuntimeError):
    """The load test's migration did not go as planned (an admin call refused, a phase never reached)."""


class InputError(ValueError):
    """A line of `driftgate embed`'s input is not what it reads; the message names the line."""
