"""The operator console in a real browser: Playwright driving Debian's headless Chromium.

One gateway for the module (a real loopback port, tests.live.ServerThread) with a collection
of 100 documents on paraphrase-MiniLM-L3-v2; the whole migration to all-MiniLM-L6-v2 is run
from the console's pages. Screenshots of every step go to tests/artifacts/console/ (ignored
by git). Chromium comes from the system (`apt-get install -y chromium`), never downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.console import session
from gateway.console.history import ShadowHistory
from tests.helpers import AUTH, L3, L6, TOKEN, StallWatch, request, settings_with
from tests.live import ServerThread, module_database

ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
DOCS = 100
# Playwright's waits end on a stall, not on slowness: a step that takes two minutes has hung
HANG_MS = 120_000
expect.set_options(timeout=HANG_MS)


def chromium_path() -> str:
    """Debian's chromium, or DRIFTGATE_CHROMIUM; a clear failure (not a skip) when there is none."""
    for candidate in (os.environ.get("DRIFTGATE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "no Chromium for the console's browser tests: install it with `apt-get install -y chromium` "
        "(.ci/run does this on Debian), or set DRIFTGATE_CHROMIUM to a Chromium binary",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def gateway(server_dsn) -> Iterator[ServerThread]:
    server = ServerThread(module_database(server_dsn, "console"), settings_with(), admin_token=TOKEN).start()
    for name, n in (("docs", DOCS), ("small", 12), ("tiny", 5)):
        assert request(f"{server.url}/v1/collections/{name}", "PUT", {"model": L3})[0] == 201
        docs = [{"id": f"d{i:03d}", "text": f"{name} document {i} about topic {i % 7}"} for i in range(n)]
        assert request(f"{server.url}/v1/collections/{name}/documents", "POST", {"documents": docs})[0] == 200
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (no cookies) per test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(HANG_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location['url']})") if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    # no script error and no Content-Security-Policy violation on any page (refusals the test
    # provokes on purpose are logged by the browser and by htmx, and are expected)
    expected = ("Failed to load resource", "Response Status Error Code")
    assert not [e for e in errors if not e.startswith(expected)], errors


class Shots:
    """Numbered full-page screenshots of one test's steps."""

    def __init__(self, page: Page, name: str) -> None:
        self.page, self.dir, self.n = page, ARTIFACTS / name, 0
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def __call__(self, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def sign_in(page: Page, gateway: ServerThread, token: str = TOKEN, path: str = "/console") -> None:
    page.goto(gateway.url + path)
    page.fill("#token", token)
    page.click("button[type=submit]")


def admin(gateway: ServerThread, method: str, path: str, body: dict | None = None) -> dict:
    code, answer = request(f"{gateway.url}/admin/v1/collections/{path}", method, body, headers=AUTH)
    assert code < 300, answer
    return answer


def wait_phase(page: Page, phase: str) -> None:
    """Watch the live panel until it shows `phase` and the actions panel has caught up with it; fail
    only when nothing moves for a minute."""
    watch = StallWatch()
    while (page.get_attribute("#phase", "data-phase"), page.get_attribute("#actions", "data-phase")) != (phase, phase):
        progress = page.evaluate(
            "[document.querySelector('#phase').dataset.phase, document.querySelector('#backfill-progress')?.value]"
        )
        watch.check(tuple(progress), f"waiting for phase {phase}")
        page.wait_for_timeout(250)


def wait_until_ready(gateway: ServerThread, name: str) -> None:
    """Poll the admin status until the backfill is done (phase ready); fail only on a stall."""
    watch = StallWatch()
    while (status := admin(gateway, "GET", f"{name}/status"))["phase"] != "ready":
        watch.check(status["backfill"].get("done"), f"backfill of {name}")
        time.sleep(0.2)


def raw_get(url: str, cookie: str | None = None) -> tuple[int, dict, str]:
    """GET without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, headers={"Cookie": f"{session.COOKIE}={cookie}"} if cookie else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


# ------------------------------------------------------------------------------ sessions


def test_a_session_cookie_is_valid_only_with_its_signature_before_it_expires_and_for_its_token():
    now = 1_000_000.0
    cookie = session.issue("token-a", now, nonce="n1")
    assert session.session_nonce("token-a", cookie, now + 10) == "n1"
    assert session.session_nonce("token-a", cookie, now + session.SESSION_S + 1) is None  # expired
    assert session.session_nonce("token-b", cookie, now) is None  # the admin token changed
    assert session.session_nonce("", cookie, now) is None  # the admin API is off
    expires, nonce, signature = cookie.split(".")
    assert session.session_nonce("token-a", f"{int(expires) + 9999}.{nonce}.{signature}", now) is None
    assert session.session_nonce("token-a", "garbage", now) is None
    csrf = session.csrf_token("token-a", "n1")
    assert session.csrf_ok("token-a", "n1", csrf)
    assert not session.csrf_ok("token-a", "n2", csrf) and not session.csrf_ok("token-a", "n1", "")
    assert not session.token_matches("", "") and session.token_matches("t", "t") and not session.token_matches("t", "u")


def test_the_chart_history_keeps_a_bounded_series_of_new_shadow_samples_only():
    history = ShadowHistory(points=3)
    history.record("c", {"samples": 0}, at=1.0)  # no samples yet: no point
    summary = {
        "samples": 5,
        "overlap_at_k": {"mean": 0.5},
        "rbo": {"mean": 0.6},
        "latency_ms": {"read": {"mean": 2.0}, "shadow": {"mean": 3.0}},
        "noise_floor": {"samples": 0},
    }
    history.record("c", summary, at=2.0)
    history.record("c", summary, at=3.0)  # the same samples again: no new point
    assert history.series("c") == [
        {
            "t": 2.0,
            "samples": 5,
            "overlap": 0.5,
            "rbo": 0.6,
            "latency_ratio": 1.5,
            "floor_overlap": None,
            "floor_rbo": None,
        }
    ]
    for n in range(6, 10):
        floor = {"samples": 1, "overlap_at_k": {"mean": 0.9}, "rbo": {"mean": 0.95}}
        history.record("c", {**summary, "samples": n, "noise_floor": floor}, at=float(n))
    assert [p["samples"] for p in history.series("c")] == [7, 8, 9]  # bounded: the newest 3
    assert history.series("c")[-1]["floor_overlap"] == 0.9 and history.series("other") == []


def test_without_chromium_the_browser_tests_fail_saying_how_to_install_it(monkeypatch):
    monkeypatch.delenv("DRIFTGATE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        chromium_path()


async def test_with_no_admin_token_the_console_is_off_and_nobody_signs_in(make_client):
    client = await make_client(admin_token="")
    form = await (await client.get("/console/login")).text()
    assert "The console is disabled" in form and "DRIFTGATE_ADMIN_TOKEN" in form
    reply = await client.post("/console/login", data={"token": ""}, allow_redirects=False)
    assert reply.status == 401 and session.COOKIE not in reply.cookies
    reply = await client.get("/console", allow_redirects=False)
    assert reply.status == 303 and reply.headers["Location"].startswith("/console/login")


# ------------------------------------------------------------------------------ forms over HTTP


def signed_in(gateway: ServerThread, next_path: str = "/console") -> tuple[requests.Session, str]:
    """A signed-in HTTP session and its CSRF token, read from a page as the browser would."""
    http = requests.Session()
    reply = http.post(gateway.url + "/console/login", data={"token": TOKEN, "next": next_path}, timeout=60)
    assert reply.status_code == 200 and reply.url.startswith(gateway.url + "/console"), reply.url
    match = re.search(r'"X-CSRF-Token": "([0-9a-f]{64})"', http.get(gateway.url + "/console", timeout=60).text)
    assert match
    return http, match.group(1)


def test_after_sign_in_the_console_only_sends_the_browser_to_its_own_pages(gateway):
    for target in ("https://evil.example/", "//evil.example/console", "/v1/collections/docs"):
        reply = requests.post(
            gateway.url + "/console/login", data={"token": TOKEN, "next": target}, allow_redirects=False, timeout=60
        )
        assert reply.status_code == 303 and reply.headers["Location"] == "/console", target
    reply = requests.post(
        gateway.url + "/console/login",
        data={"token": TOKEN, "next": "/console/models"},
        allow_redirects=False,
        timeout=60,
    )
    assert reply.headers["Location"] == "/console/models"


def test_the_models_page_says_where_each_model_runs_here(gateway):
    import onnxruntime as ort

    here = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    http, _csrf = signed_in(gateway)
    html = http.get(gateway.url + "/console/models", timeout=60).text
    assert "<th>Runs on</th>" in html
    row = re.search(r'<tr data-model="' + re.escape(L3) + r'">(.*?)</tr>', html, re.S)
    assert row and f'<td class="provider">{here}</td>' in row.group(1)


@pytest.mark.parametrize(
    ("path", "form", "status", "code", "says"),
    [
        ("docs/plan", {}, 400, "invalid_request", "'to_model' is empty"),
        ("docs/migrations", {"to_model": "no-such-model"}, 400, None, "no-such-model"),
        ("docs/backfill", {"max_rate": "fast"}, 400, "invalid_request", "positive number"),
        ("docs/backfill", {"max_rate": "-5"}, 400, "invalid_request", "positive number"),
        ("docs/backfill", {"action": "explode"}, 400, "invalid_request", "pause or resume"),
        ("docs/shadow", {"model": L6, "sample_rate": "2"}, 400, "invalid_request", "between 0 and 1"),
        ("docs/retire", {"model": L3, "confirm": "docs"}, 409, None, L3),
        ("docs/backfill", {"action": "pause"}, 409, "no_backfill", "no migration in flight"),
        ("nope/abort", {}, 404, "collection_not_found", "'nope' does not exist"),
    ],
)
def test_bad_console_input_gets_a_clear_4xx_and_changes_nothing(gateway, path, form, status, code, says):
    http, csrf = signed_in(gateway)
    before = admin(gateway, "GET", "docs/status")["state_version"]
    reply = http.post(
        f"{gateway.url}/console/collections/{path}", data=form, headers={"X-CSRF-Token": csrf}, timeout=60
    )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert (code is None or error["code"] == code) and says in error["message"], error
    assert admin(gateway, "GET", "docs/status")["state_version"] == before


# ------------------------------------------------------------------------------ the browser


def test_nothing_of_the_console_is_reachable_without_signing_in(gateway, page):
    for path in ("/console", "/console/models", "/console/collections/docs"):
        page.goto(gateway.url + path)
        assert page.url.startswith(f"{gateway.url}/console/login?next="), page.url
        expect(page.locator("#token")).to_be_visible()
        assert "docs document" not in page.content()
    # fragments, chart data and the vendored scripts answer nothing either
    for path in ("/console/collections/docs/live", "/console/collections/docs/shadow.json"):
        status, _, body = raw_get(gateway.url + path)
        assert status == 303 and "d000" not in body, (path, status)
    status, headers, _ = raw_get(gateway.url + "/console/static/vendor/htmx-2.0.11.min.js")
    assert status == 303 and headers["Location"].startswith("/console/login")
    code, answer = request(f"{gateway.url}/console/collections/docs/abort", "POST", {})
    assert code == 401 and answer["error"]["code"] == "unauthorized"
    assert admin(gateway, "GET", "docs/status")["phase"] == "steady"


def test_a_wrong_token_is_refused_and_sets_no_session(gateway, page):
    shots = Shots(page, "wrong-token")
    with page.expect_response(lambda r: r.url.endswith("/console/login") and r.request.method == "POST") as reply:
        sign_in(page, gateway, token="not-the-token")
    assert reply.value.status == 401
    expect(page.locator("#login-error")).to_contain_text("wrong admin token")
    shots("refused")
    assert not [c for c in page.context.cookies() if c["name"] == session.COOKIE]
    page.goto(gateway.url + "/console")
    assert "/console/login" in page.url


def test_signing_in_sets_a_strict_http_only_cookie_pages_carry_a_csp_and_no_inline_script(gateway, page):
    with page.expect_response(lambda r: r.url == gateway.url + "/console") as first:
        sign_in(page, gateway, path="/console/login?next=/console")
    cookie = next(c for c in page.context.cookies() if c["name"] == session.COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    headers = first.value.headers
    assert (
        "script-src 'self'" in headers["content-security-policy"]
        and "unsafe-inline" not in headers["content-security-policy"]
    )
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    html = page.content()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"\sstyle=\"", html) and not re.search(r"\son[a-z]+=\"", html), "inline style or handler"
    # signing out ends the session: the console sends the browser back to the sign-in form
    page.click("form.logout button")
    assert "/console/login" in page.url
    page.goto(gateway.url + "/console")
    assert "/console/login" in page.url


def test_a_forged_post_without_the_csrf_token_is_refused_and_changes_nothing(gateway, page):
    sign_in(page, gateway)
    before = admin(gateway, "GET", "docs/status")["state_version"]
    url = gateway.url + "/console/collections/docs/migrations"
    # the session cookie goes along (as it would in a forged cross-site form), the CSRF token does not
    for headers in ({}, {"X-CSRF-Token": "0" * 64}):
        reply = page.request.post(url, form={"to_model": L6}, headers=headers)
        assert reply.status == 403, reply.text()
        assert reply.json()["error"]["code"] == "csrf_token_invalid"
    reply = page.request.post(url, form={"to_model": L6, "csrf": "forged"})
    assert reply.status == 403
    status = admin(gateway, "GET", "docs/status")
    assert status["phase"] == "steady" and status["state_version"] == before


def test_retire_needs_the_collections_name_typed_to_confirm(gateway, page):
    admin(gateway, "POST", "small/migrations", {"to_model": L6})
    wait_until_ready(gateway, "small")
    assert admin(gateway, "POST", "small/verify", {"sample": 12})["passed"]
    admin(gateway, "POST", "small/read-model", {"model": L6})
    shots = Shots(page, "retire-confirmation")
    sign_in(page, gateway, path="/console/collections/small")
    expect(page.locator("#retire")).to_be_visible()
    page.fill("#confirm", "not-small")
    page.click("#retire")
    expect(page.locator("#flash")).to_contain_text("confirmation_mismatch")
    shots("wrong-name-refused")
    assert L3 in admin(gateway, "GET", "small/status")["write_models"]
    page.fill("#confirm", "small")
    page.click("#retire")
    expect(page.locator("#flash")).to_contain_text(f"{L3} retired")
    status = admin(gateway, "GET", "small/status")
    assert status["phase"] == "steady" and status["write_models"] == [L6] and L3 not in status["models"]
    shots("retired")


def test_abort_asks_first_and_then_returns_to_steady_on_the_old_model(gateway, page):
    admin(gateway, "POST", "tiny/migrations", {"to_model": L6})
    wait_until_ready(gateway, "tiny")
    sign_in(page, gateway, path="/console/collections/tiny")
    # the backfill's max rate, set and cleared through the console's form handler (with the page's CSRF token)
    csrf = json.loads(page.get_attribute("body", "hx-headers") or "{}")
    url = gateway.url + "/console/collections/tiny/backfill"
    reply = page.request.post(url, form={"max_rate": "50"}, headers=csrf)
    assert reply.status == 200 and "max rate 50 docs/s" in reply.text()
    assert admin(gateway, "GET", "tiny/status")["backfill"]["max_rate"] == 50
    reply = page.request.post(url, form={"max_rate": ""}, headers=csrf)
    assert reply.status == 200 and "no rate limit" in reply.text()
    assert admin(gateway, "GET", "tiny/status")["backfill"]["max_rate"] is None
    page.reload()  # the page as it is now: no panel reload pending while the dialogs below are answered
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#abort")
    page.wait_for_timeout(500)  # room for a request that must not come
    expect(page.locator("#abort")).to_be_visible()
    assert admin(gateway, "GET", "tiny/status")["to_model"] == L6  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#abort")
    expect(page.locator("#flash")).to_contain_text("migration aborted")
    wait_phase(page, "steady")
    status = admin(gateway, "GET", "tiny/status")
    assert status["write_models"] == [L3] and L6 not in status["models"]


def test_a_whole_migration_runs_from_the_console(gateway, page):
    shots = Shots(page, "migration")
    sign_in(page, gateway)
    row = page.locator("tr[data-collection=docs]")
    for fact in ("steady", L3, "100.0%", "index ready", "matches its pin", str(DOCS), "in sync"):
        expect(row).to_contain_text(fact)
    shots("collections")

    row.locator("a").click()
    expect(page.locator("#phase")).to_have_text("steady")
    page.select_option("#to_model", L6)
    page.click("#plan-form button")
    plan = page.locator("#plan-result")
    expect(plan).to_contain_text(f"{L3} → {L6}")
    expect(plan).to_contain_text(f"{DOCS}")
    shots("plan")

    page.click("#start")
    expect(page.locator("#flash")).to_contain_text("migration of docs")
    shots("backfill")  # on a quick machine 100 documents may already be done here
    wait_phase(page, "ready")
    expect(page.locator("#backfill-numbers")).to_contain_text(f"{DOCS} of {DOCS}")
    expect(page.locator("#next-step")).to_contain_text("driftgate migrate verify docs")  # as `migrate status` says
    shots("ready")

    # the guard refuses an unverified cutover exactly as the API does
    page.click("#cutover")
    expect(page.locator("#flash")).to_contain_text("index_incomplete")
    expect(page.locator("#cutover-checks")).to_contain_text("verification passed: no")
    shots("cutover-refused")
    page.click("#verify")
    expect(page.locator("#verify-report")).to_contain_text("Verification passed")
    expect(page.locator("#cutover-checks")).to_contain_text("verification passed: yes")
    shots("verified")

    # shadow reads on every query, with an A/A noise floor: the charts fill in
    page.fill("#sample_rate", "1")
    page.fill("#noise_floor_rate", "0.5")
    page.click("#shadow-on")
    wait_phase(page, "shadow")
    watch = StallWatch()
    sent = 0
    while int(page.get_attribute("#charts", "data-points") or 0) < 2:
        code, _ = request(f"{gateway.url}/v1/collections/docs/query", "POST", {"text": f"topic {sent % 7}", "k": 5})
        assert code == 200
        sent += 1
        watch.check(page.get_attribute("#charts", "data-points"), "waiting for the shadow charts")
        page.wait_for_timeout(200)
    expect(page.locator("#chart-agreement canvas")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("new model agrees")
    shots("shadow")

    page.click("#cutover")
    wait_phase(page, "cutover")
    expect(page.locator("#read-model")).to_have_text(L6)
    shots("cutover")
    page.click("#rollback")
    wait_phase(page, "ready")
    expect(page.locator("#read-model")).to_have_text(L3)
    shots("rollback")
    page.click("#cutover")
    wait_phase(page, "cutover")
    shots("cutover-again")

    page.fill("#confirm", "docs")
    page.click("#retire")
    wait_phase(page, "steady")
    expect(page.locator("#read-model")).to_have_text(L6)
    expect(page.locator("#timeline")).to_contain_text("retire")
    shots("retired")
    status = admin(gateway, "GET", "docs/status")
    assert status["read_model"] == L6 and status["write_models"] == [L6]
    assert status["models"][L6]["rows"] == DOCS and status["models"][L6]["coverage"] == 1.0
    # the audit log names the console as the actor of every operator action
    actors = {a["action"]: a["actor"] for a in status["recent_actions"] if a["action"] != "backfill_done"}
    assert {"retire", "cutover", "rollback"} <= set(actors) and all(a.startswith("console ") for a in actors.values())

    page.click("text=Models")
    expect(page.locator(f"tr[data-model='{L6}']")).to_contain_text("yes, same fingerprint")
    shots("models")
