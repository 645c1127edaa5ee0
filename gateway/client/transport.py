"""What `Client` and `AsyncClient` share: headers, answers to results or exceptions, retries.

Retried (tenacity): a 503 (the gateway's database or encoder is briefly unavailable, nothing
was done), waiting its Retry-After, and a connection that could not be made or was closed
before an answer. A read timeout is not retried: the request may have been applied. The
first attempt runs outside tenacity, so a call that succeeds pays nothing for the policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from gateway.client.calls import Call
from gateway.client.errors import DriftgateError, GatewayUnreachable, Unavailable, error_for

T = TypeVar("T")
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.PoolTimeout)
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Options:
    url: str
    api_key: str | None
    admin_token: str | None
    timeout: float
    retries: int  # extra attempts after the first
    max_wait: float  # the longest wait between attempts, whatever Retry-After says

    def headers(self, call: Call) -> dict[str, str] | None:
        token = self.admin_token if call.admin else self.api_key
        if token is None:
            return _JSON if call.body is not None else None
        headers = {"Authorization": f"Bearer {token}"}
        if call.body is not None:
            headers.update(_JSON)
        return headers

    def limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=100, max_keepalive_connections=20)

    def retry_policy(self) -> dict[str, Any]:
        """Keyword arguments of tenacity's Retrying / AsyncRetrying (the attempts after the first)."""
        return {
            "stop": stop_after_attempt(self.retries),
            "wait": lambda state: _wait(state, self.max_wait),
            "retry": retry_if_exception(retryable),
            "reraise": True,
        }


def encode(call: Call) -> bytes | None:
    if call.body is None:
        return None
    try:
        return orjson.dumps(call.body)
    except TypeError:  # what orjson cannot write (an integer beyond 64 bits) the standard library can
        return json.dumps(call.body).encode()


def result(call: Call[T], response: httpx.Response) -> T:
    """The call's typed result, or the exception for an error answer."""
    status = response.status_code
    try:
        data = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        data = None
    if status >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            raise error_for(status, "http_error", response.text[:200] or response.reason_phrase)
        exc = error_for(status, str(error.get("code")), str(error.get("message")))
        exc.retry_after = _retry_after(response.headers)
        raise exc
    return call.read((status, response.headers, data))


def unreachable(url: str, exc: httpx.TransportError) -> GatewayUnreachable:
    error = GatewayUnreachable(
        0,
        "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable",
        f"no answer from the gateway at {url} ({type(exc).__name__}: {exc}); is `driftgate serve` running there?",
    )
    error.retryable = isinstance(exc, _CONNECT_FAILURES)
    return error


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, GatewayUnreachable):
        return exc.retryable
    return isinstance(exc, Unavailable)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_BACKOFF = wait_random_exponential(multiplier=0.1, max=5.0)


def _wait(state: RetryCallState, max_wait: float) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    after = exc.retry_after if isinstance(exc, DriftgateError) else None
    return min(max_wait, after if after is not None else _BACKOFF(state))
