"""Sign-in, sign-out and the console's gate: a session for every page, a CSRF token for every change.

Nothing under /console answers without a valid session except the sign-in form and its
stylesheet. A page request without one is sent to the sign-in form; anything else gets 401.
Every state-changing request must also carry the session's CSRF token (header X-CSRF-Token,
which htmx sends for every request of a page, or a `csrf` form field), else 403.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from aiohttp import web

from gateway.api.keys import ADMIN_TOKEN
from gateway.console import session
from gateway.console.render import SECURITY_HEADERS, render
from gateway.domain.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

ROOT = "/console"
LOGIN = ROOT + "/login"
OPEN_PATHS = frozenset({LOGIN, ROOT + "/static/console.css"})
CSRF = web.RequestKey("console_csrf", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _in_console(path: str) -> bool:
    return path == ROOT or path.startswith(ROOT + "/")


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    # Secure when the gateway itself serves TLS; behind a TLS proxy the browser sees https anyway
    response.set_cookie(
        session.COOKIE,
        value,
        max_age=session.SESSION_S,
        path=ROOT,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


async def _given_csrf(request: web.Request) -> str:
    header = request.headers.get("X-CSRF-Token", "")
    if header or request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return header
    return str((await request.post()).get("csrf", ""))


@web.middleware
async def console_auth(request: web.Request, handler) -> web.StreamResponse:
    if not _in_console(request.path):
        return await handler(request)
    if request.path not in OPEN_PATHS:
        expected = request.app[ADMIN_TOKEN]
        nonce = session.session_nonce(expected, request.cookies.get(session.COOKIE, ""), time.time())
        if nonce is None:
            if request.method == "GET" and "HX-Request" not in request.headers:
                return web.Response(status=303, headers={"Location": f"{LOGIN}?next={quote(request.path_qs)}"})
            raise Unauthorized("sign in to the console first: open /console/login and enter the admin token")
        if request.method not in SAFE_METHODS and not session.csrf_ok(expected, nonce, await _given_csrf(request)):
            log.warning(
                "console request without its CSRF token from %s: %s %s", request.remote, request.method, request.path
            )
            raise Forbidden(
                "this request lacks the console's CSRF token; reload the console page and try again",
                code="csrf_token_invalid",
            )
        request[CSRF] = session.csrf_token(expected, nonce)
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(ROOT + "/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _next(request: web.Request, value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and _in_console(value) and not value.startswith("//") and LOGIN not in value:
        return value
    return ROOT


@routes.get(LOGIN)
async def login_form(request: web.Request) -> web.Response:
    return render("login.html", next=_next(request, request.query.get("next")), error=None, disabled=_disabled(request))


def _disabled(request: web.Request) -> bool:
    return not request.app[ADMIN_TOKEN]


@routes.post(LOGIN)
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    target = _next(request, str(form.get("next", "")))
    expected = request.app[ADMIN_TOKEN]
    if not session.token_matches(str(form.get("token", "")), expected):
        log.warning("console sign-in with a wrong admin token from %s", request.remote)
        error = (
            "the console is disabled: set DRIFTGATE_ADMIN_TOKEN on the gateway"
            if not expected
            else "wrong admin token: enter the value of DRIFTGATE_ADMIN_TOKEN"
        )
        return render("login.html", status=401, next=target, error=error, disabled=not expected)
    response = web.Response(status=303, headers={"Location": target})
    _set_cookie(request, response, session.issue(expected, time.time()))
    log.info("console sign-in from %s", request.remote)
    return response


@routes.post(ROOT + "/logout")
async def logout(request: web.Request) -> web.Response:
    response = web.Response(status=303, headers={"Location": LOGIN})
    response.del_cookie(session.COOKIE, path=ROOT)
    return response
