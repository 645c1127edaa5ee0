"""Console sessions and CSRF tokens: pure functions of the admin token, a nonce and the clock.

A session is a signed cookie `<expires>.<nonce>.<signature>`, HMAC-SHA256 under a key derived
from the admin token, so any replica accepts it (no session store) and changing the token signs
everyone out. The CSRF token of a session is another HMAC of its nonce: a page carries it in
every state-changing request, and a cross-site form, which cannot read the page, cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "driftgate_console"
SESSION_S = 8 * 3600  # a working day; signing in again is cheap


def _key(admin_token: str, purpose: bytes) -> bytes:
    return hmac.new(admin_token.encode(), b"driftgate-console:" + purpose, hashlib.sha256).digest()


def _sign(admin_token: str, payload: str) -> str:
    return hmac.new(_key(admin_token, b"session"), payload.encode(), hashlib.sha256).hexdigest()


def token_matches(given: str, admin_token: str) -> bool:
    """Constant-time comparison of a typed token with the admin token (an empty admin token never matches)."""
    return bool(admin_token) and hmac.compare_digest(given.encode(), admin_token.encode())


def issue(admin_token: str, now: float, *, nonce: str | None = None) -> str:
    """A new session cookie value, valid for SESSION_S seconds from `now`."""
    payload = f"{int(now) + SESSION_S}.{nonce or secrets.token_urlsafe(18)}"
    return f"{payload}.{_sign(admin_token, payload)}"


def session_nonce(admin_token: str, cookie: str, now: float) -> str | None:
    """The nonce of a valid, unexpired session cookie signed with this admin token; else None."""
    if not admin_token:
        return None
    expires, _, rest = cookie.partition(".")
    nonce, _, signature = rest.rpartition(".")
    if not expires.isdigit() or not nonce:
        return None
    if not hmac.compare_digest(signature.encode(), _sign(admin_token, f"{expires}.{nonce}").encode()):
        return None
    return nonce if int(expires) > now else None


def csrf_token(admin_token: str, nonce: str) -> str:
    """The CSRF token that goes with a session."""
    return hmac.new(_key(admin_token, b"csrf"), nonce.encode(), hashlib.sha256).hexdigest()


def csrf_ok(admin_token: str, nonce: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), csrf_token(admin_token, nonce).encode())
