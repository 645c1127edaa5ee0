"""The client's exceptions: one class per API error code, under one class per HTTP status.

Every error answer of the gateway is `{"error": {"code", "message"}}`; the client raises the
class registered for its code (`errors.InvalidFilter` for `invalid_filter`), or for an unknown
code the class of its status (`BadRequest` for a 400), or `DriftgateError`. Catch a status
family (`except NotFound`) or one code (`except CollectionNotFound`). The list follows
gateway/domain/errors.py and the codes the gateway's modules raise; a test keeps them in step.
"""

from __future__ import annotations


class DriftgateError(Exception):
    """An error answer of the gateway (`status`, `code`, `message`), or `GatewayUnreachable`."""

    status: int = 0
    code: str = "error"
    retry_after: float | None = None  # seconds, from the answer's Retry-After header

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}  # the error body's fields beside code and message


class GatewayUnreachable(DriftgateError):
    """No answer: the connection failed or timed out after the client's retries."""

    code = "unreachable"
    retryable = False  # True when the request cannot have reached the gateway (connection refused)


class BadRequest(DriftgateError):
    """The request is wrong; the message says what to change."""

    status = 400
    code = "bad_request"


class InvalidRequest(BadRequest):
    code = "invalid_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class InvalidFilter(BadRequest):
    code = "invalid_filter"


class InvalidLine(BadRequest):
    """A bulk load stopped at a bad line; the chunks before it are stored."""

    code = "invalid_line"

    @property
    def line(self) -> int | None:
        return self.details.get("line")

    @property
    def committed_lines(self) -> int:
        """How many lines of the stream are stored: resume with the line after them."""
        return int(self.details.get("committed_lines", 0))


class ConfirmationMismatch(BadRequest):
    code = "confirmation_mismatch"


class RowSecurity(BadRequest):
    code = "row_security"


class UnsafeColumnType(BadRequest):
    code = "unsafe_column_type"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class InvalidIdentifier(BadRequest):
    code = "invalid_identifier"


class InvalidCollectionName(BadRequest):
    code = "invalid_collection_name"


class InvalidDocumentId(BadRequest):
    code = "invalid_document_id"


class InvalidVector(BadRequest):
    code = "invalid_vector"


class VectorOutOfRange(BadRequest):
    """A vector has a value a `halfvec` table cannot store (|x| > 65504); nothing was written."""

    code = "vector_out_of_range"


class InvalidText(BadRequest):
    code = "invalid_text"


class InvalidNumber(BadRequest):
    code = "invalid_number"


class InvalidDimensions(BadRequest):
    code = "invalid_dimensions"


class DimensionMismatch(BadRequest):
    code = "dimension_mismatch"


class BatchTooLarge(BadRequest):
    code = "batch_too_large"


class DuplicateId(BadRequest):
    code = "duplicate_id"


class EmptyText(BadRequest):
    code = "empty_text"


class TextTooLong(BadRequest):
    code = "text_too_long"


class MetadataTooLarge(BadRequest):
    code = "metadata_too_large"


class KOutOfRange(BadRequest):
    code = "k_out_of_range"


class UnknownModel(BadRequest):
    code = "unknown_model"


class ModelNotServed(BadRequest):
    """`/v1/embeddings` named a model no collection uses and `[models] serve` does not list."""

    code = "model_not_served"


class InsufficientPrivilege(BadRequest):
    code = "insufficient_privilege"


class IdNotUnique(BadRequest):
    code = "id_not_unique"


class InvalidColumnType(BadRequest):
    code = "invalid_column_type"


class ColumnNotFound(BadRequest):
    code = "column_not_found"


class InvalidRowFilter(BadRequest):
    code = "invalid_row_filter"


class UnsupportedContentEncoding(BadRequest):
    code = "unsupported_content_encoding"


class Unauthorized(DriftgateError):
    """The admin token is missing or wrong (or the admin API is off)."""

    status = 401
    code = "unauthorized"


class Forbidden(DriftgateError):
    """The credential is valid but does not cover this (an API key scoped to other collections)."""

    status = 403
    code = "forbidden"


class CsrfTokenInvalid(Forbidden):
    code = "csrf_token_invalid"


class NotFound(DriftgateError):
    """The collection, document, table or endpoint does not exist."""

    status = 404
    code = "not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class TableNotFound(NotFound):
    code = "table_not_found"


class NotAdopted(NotFound):
    code = "not_adopted"


class MethodNotAllowed(DriftgateError):
    """The endpoint does not take this method."""

    status = 405
    code = "method_not_allowed"


class Conflict(DriftgateError):
    """The request conflicts with the collection's state."""

    status = 409
    code = "conflict"


class CollectionExists(Conflict):
    code = "collection_exists"


class AdoptionBroken(Conflict):
    code = "adoption_broken"


class AdoptionInProgress(Conflict):
    code = "adoption_in_progress"


class StateChanged(Conflict):
    code = "state_changed"


class ModelMismatch(Conflict):
    code = "model_mismatch"


class ModelDrift(Conflict):
    code = "model_drift"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class IndexIncomplete(Conflict):
    code = "index_incomplete"


class StateChanging(Conflict):
    code = "state_changing"


class RetireReadModel(Conflict):
    code = "retire_read_model"


class VectorsMismatch(Conflict):
    code = "vectors_mismatch"


class CollectionFollowed(Conflict):
    code = "collection_followed"


class AdoptionImporting(Conflict):
    code = "adoption_importing"


class SameModel(Conflict):
    code = "same_model"


class NotInWriteSet(Conflict):
    code = "not_in_write_set"


class NoBackfill(Conflict):
    code = "no_backfill"


class InvalidShadow(Conflict):
    code = "invalid_shadow"


class NoMigration(Conflict):
    """An adapter bridges a migration's two models: there is none in flight."""

    code = "no_migration"


class TooFewPairs(Conflict):
    code = "too_few_pairs"


class AdapterBelowFloor(Conflict):
    """The adapter's held-out agreement is below the floor: it cannot serve (docs/adapter.md)."""

    code = "adapter_below_floor"


class AdapterMissing(Conflict):
    code = "adapter_missing"


class ModelNotRegistered(Conflict):
    code = "model_not_registered"


class PayloadTooLarge(DriftgateError):
    """The request body is over the gateway's limit; split it."""

    status = 413
    code = "payload_too_large"


class RequestTooLarge(PayloadTooLarge):
    code = "request_too_large"


class TooManyValues(PayloadTooLarge):
    code = "too_many_values"


class InternalError(DriftgateError):
    """A bug in the gateway; it has been logged there."""

    status = 500
    code = "internal_error"


class EncoderBadReply(DriftgateError):
    """A remote embedding provider answered without usable vectors."""

    status = 502
    code = "encoder_bad_reply"


class EncoderRejected(EncoderBadReply):
    code = "encoder_rejected"


class Unavailable(DriftgateError):
    """A dependency is down or overloaded; retried by the client, then raised."""

    status = 503
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class EncoderUnavailable(Unavailable):
    code = "encoder_unavailable"


class EncoderBusy(Unavailable):
    code = "encoder_busy"


class TooManyConnections(Unavailable):
    code = "too_many_connections"


class RateLimited(Unavailable):
    code = "rate_limited"


class RequestTimeout(DriftgateError):
    """The gateway gave up on the request after its timeout."""

    status = 504
    code = "request_timeout"


def _registry() -> tuple[dict[str, type[DriftgateError]], dict[int, type[DriftgateError]]]:
    by_code: dict[str, type[DriftgateError]] = {}
    by_status: dict[int, type[DriftgateError]] = {}
    stack: list[type[DriftgateError]] = [DriftgateError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.status:
            by_code[cls.code] = cls
            if cls.__base__ is DriftgateError:
                by_status[cls.status] = cls
    return by_code, by_status


BY_CODE, BY_STATUS = _registry()


def error_for(status: int, code: str, message: str, details: dict | None = None) -> DriftgateError:
    """The exception for an error answer: by its code, else by its status."""
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or DriftgateError
    return cls(status, code, message, details)
