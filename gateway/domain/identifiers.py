"""Validation of names that end up in SQL identifiers, and the identifiers derived from them.

Table and schema names never come from a request verbatim: a collection name is checked
against a strict pattern and the embedding table's name is derived from the model key with
a hash suffix, so two keys that slug alike still get different tables.
"""

from __future__ import annotations

import hashlib
import re

from gateway.domain.errors import InvalidRequest

COLLECTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
MAX_ID_LENGTH = 256


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid collection name {name!r}: use 1-48 characters, a lowercase letter "
            "followed by lowercase letters, digits or underscores",
            code="invalid_collection_name",
        )
    return name


def document_id_problem(doc_id: object) -> str | None:
    """What is wrong with a document id, or None: the one rule for every write path."""
    if not isinstance(doc_id, str) or not 1 <= len(doc_id) <= MAX_ID_LENGTH:
        return f"invalid document id: ids are 1-{MAX_ID_LENGTH} printable characters"
    if not doc_id.isprintable():
        return "invalid document id: it contains non-printable characters"
    return None


def document_problem(doc_id: object, text: object) -> str | None:
    """What keeps a document (id and text) out of a collection, or None. The API answers it as a
    400 before anything is written; follow and adoption skip (and count) such a row."""
    problem = document_id_problem(doc_id)
    if problem is None and (not isinstance(text, str) or not text.strip()):
        problem = "the text is empty or blank"
    return problem


def validate_document_id(doc_id: str) -> str:
    problem = document_id_problem(doc_id)
    if problem is not None:
        raise InvalidRequest(problem, code="invalid_document_id")
    return doc_id


def collection_schema(collection: str) -> str:
    """The PostgreSQL schema that holds one collection's tables."""
    return f"dgc_{validate_collection_name(collection)}"


def embedding_table(model_key: str) -> str:
    """The name of a model's embedding table inside a collection schema (at most 63 bytes)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_key.lower()).strip("_")[:40]
    digest = hashlib.sha256(model_key.encode()).hexdigest()[:8]
    return f"emb_{slug}_{digest}"


def quote_ident(name: str) -> str:
    """Quote a derived identifier for SQL. Inputs are already validated; quoting is the belt."""
    return '"' + name.replace('"', '""') + '"'
