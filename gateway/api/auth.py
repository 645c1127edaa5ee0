"""Who may call what: the admin token (api/admin.py) and data-plane API keys, scoped to collections.

Credentials are compared as bytes in constant time. A header that is not UTF-8 is just a wrong
credential (401): aiohttp hands such bytes over as surrogate escapes, which `str.encode` refuses.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from gateway.api.keys import API_KEYS
from gateway.config import ApiKey
from gateway.domain.errors import Forbidden, Unauthorized

# data-plane routes that read no collection: a key scoped to collections may call them
UNSCOPED_ROUTES = frozenset({"/v1/embeddings"})


@dataclass(frozen=True)
class Grant:
    """One API key and the collections it opens (None: all of them)."""

    key: bytes
    collections: frozenset[str] | None = None

    def allows(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections


GRANT = web.RequestKey("api_key", Grant)  # the key a data-plane request came with


def grants(configured: tuple[ApiKey | str, ...], env_keys: str) -> tuple[Grant, ...]:
    """The keys of `server.api_keys` and of DRIFTGATE_API_KEYS (comma-separated, all collections)."""
    found = [
        Grant(item.encode()) if isinstance(item, str) else Grant(item.key.encode(), _scope(item.collections))
        for item in configured
    ]
    found += [Grant(k.strip().encode()) for k in env_keys.split(",") if k.strip()]
    return tuple(found)


def _scope(collections: tuple[str, ...] | None) -> frozenset[str] | None:
    return None if collections is None else frozenset(collections)


def as_bytes(value: str) -> bytes:
    """A header value as the bytes the client sent (non-UTF-8 bytes arrive surrogate-escaped)."""
    return value.encode("utf-8", "surrogateescape")


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(as_bytes(given), expected.encode())


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _match(keys: tuple[Grant, ...], given: bytes) -> Grant | None:
    found = None
    for grant in keys:  # every key is compared: the time does not say which one nearly matched
        if hmac.compare_digest(given, grant.key) and found is None:
            found = grant
    return found


@web.middleware
async def api_key_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Data-plane API keys, when any are configured; health, metrics and docs stay open."""
    keys = request.config_dict[API_KEYS] if request.path.startswith("/v1/") else ()
    if keys:
        given = bearer_token(request) or request.headers.get("X-API-Key", "")
        grant = _match(keys, as_bytes(given)) if given else None
        if grant is None:
            raise Unauthorized("missing or wrong API key: send Authorization: Bearer <key> or X-API-Key")
        request[GRANT] = grant
        if request.match_info.route.resource is not None:  # unknown routes answer 404/405 as usual
            collection = request.match_info.get("collection")
            if collection is not None:
                authorize_collection(request, collection)
            elif grant.collections is not None and request.path not in UNSCOPED_ROUTES:
                raise Forbidden(
                    "this API key is scoped to some collections; this endpoint needs a key for all "
                    "collections (server.api_keys without `collections`)"
                )
    return await handler(request)


def authorize_collection(request: web.Request, collection: str) -> None:
    """Refuse (403) a request whose API key does not cover `collection`; no-op without keys."""
    grant = request.get(GRANT)
    if grant is not None and not grant.allows(collection):
        raise Forbidden(
            f"this API key does not cover collection {collection!r}; use a key listed for it in server.api_keys"
        )
