"""The dashboard end to end, in Debian's Chromium (headless, driven by Playwright's Python
package, never a downloaded browser) against ``clearance serve``'s app under uvicorn on
loopback: sign in, approve and reject while a second browser's list follows live, filter the
log and open a decision, engage and release the kill switch, and no request leaves the server.
Every test saves a screenshot (``CLEARANCE_SCREENSHOTS`` names the folder; else a temporary one)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dashboard_support import seed

from clearance import Engine
from clearance.server import ServerThread

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is in the test extra")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium with apt-get")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = tmp_path_factory.mktemp("dashboard") / "dashboard.db"
    data = seed(db)
    engine = Engine(db)
    with ServerThread(engine) as server:
        yield {**data, "url": server.url, "engine": engine}
    engine.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("CLEARANCE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page: Any, shots: Path, name: str, *, docs: bool = False) -> Path:
    """Save the page; with ``docs`` and ``CLEARANCE_UPDATE_DOCS=1``, also as the README's picture."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    if docs and os.environ.get("CLEARANCE_UPDATE_DOCS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / path.name)
    return path


def signed_in(browser: Any, site: dict[str, Any], who: str, **context_kw: Any) -> Any:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, **context_kw)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(site["url"] + "/")
    assert "/login" in page.url  # no session: the login form, not the desk
    page.get_by_label("API key").fill(site["tokens"][who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site["url"] + "/")
    return page


def test_approve_and_reject_while_a_second_browser_follows_live(browser: Any, site: dict[str, Any], shots: Path) -> None:
    alice, bob = signed_in(browser, site, "alice"), signed_in(browser, site, "bob")
    first, second, _ = site["waiting"]
    for page in (alice, bob):
        page.wait_for_selector("#live:has-text('Live')")  # the stream is open
        assert page.locator(f"article#{first}").is_visible() and page.locator(f"article#{second}").is_visible()
    quorum = alice.locator(f"article#{site['wire']}")
    assert "Approvals 0 of 2" in quorum.inner_text()
    screenshot(alice, shots, "approvals-desk", docs=True)

    alice.locator(f"article#{first}").get_by_role("button", name="Approve").click()
    alice.wait_for_selector(".message.ok:has-text('Approved refund_payment')")
    bob.wait_for_selector(f"article#{first}", state="detached")  # bob's list followed without a reload

    card = alice.locator(f"article#{second}")
    card.get_by_label("Comment").fill("customer already refunded by card")
    card.get_by_role("button", name="Reject").click()
    alice.wait_for_selector(".message.ok:has-text('Rejected refund_payment')")
    bob.wait_for_selector(f"article#{second}", state="detached")
    rejected = site["engine"].get_approval(second)
    assert (rejected.status.value, rejected.resolved_by, rejected.comment) == ("rejected", "alice", "customer already refunded by card")
    assert site["engine"].get_approval(first).status.value == "approved"

    # Quorum: alice's vote shows as progress on bob's screen; bob's completes it.
    alice.locator(f"article#{site['wire']}").get_by_role("button", name="Approve").click()
    alice.wait_for_selector(".message.ok:has-text('still needs 1 more')")
    bob.wait_for_selector(f"article#{site['wire']} label:has-text('Approvals 1 of 2')")
    screenshot(bob, shots, "approvals-desk-live")
    bob.locator(f"article#{site['wire']}").get_by_role("button", name="Approve").click()
    bob.wait_for_selector(".message.ok:has-text('Approved wire_transfer')")
    assert site["engine"].get_approval(site["wire"]).status.value == "approved"
    alice.context.close()
    bob.context.close()


def test_filter_the_log_and_open_a_decision(browser: Any, site: dict[str, Any], shots: Path) -> None:
    page = signed_in(browser, site, "alice")
    page.get_by_role("link", name="Decisions").click()
    page.get_by_label("Result").select_option("blocked")
    page.get_by_label("Tool").fill("refund_payment")
    page.get_by_label("Rule").fill("refunds-cap")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.log tbody tr")
    assert rows.count() == 1 and "blocked" in rows.first.inner_text()
    screenshot(page, shots, "decision-log")
    rows.first.get_by_role("link").click()
    page.wait_for_url(f"**/decisions/{site['blocked']}")
    text = page.locator("main").inner_text()
    for expected in ("refunds-cap", "exceeds max_value", "Precedents", "harmful", "decision.made", "intact"):
        assert expected in text, expected
    screenshot(page, shots, "decision-page", docs=True)
    page.context.close()


def test_engage_and_release_the_kill_switch(browser: Any, site: dict[str, Any], shots: Path) -> None:
    page = signed_in(browser, site, "ops")
    page.get_by_role("link", name="Kill switch").click()
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_label("Reason").fill("incident 42")
    page.get_by_role("button", name="Engage kill switch").click()
    page.wait_for_selector(".banner.danger")
    assert asked and "Engage the kill switch" in asked[0]
    assert [(s.scope, s.reason, s.activated_by) for s in site["engine"].kill_switches()] == [("all", "incident 42", "ops")]
    screenshot(page, shots, "kill-switch-engaged")
    page.get_by_role("button", name="Release").click()
    page.wait_for_selector(".state.ok")
    assert site["engine"].kill_switches() == []
    assert page.locator(".banner.danger").count() == 0
    page.context.close()


def test_pages_make_no_request_to_any_other_host(browser: Any, site: dict[str, Any], shots: Path) -> None:
    page = signed_in(browser, site, "ops", color_scheme="dark")
    seen: list[str] = []
    page.context.route("**/*", lambda route: (seen.append(route.request.url), route.continue_()))
    for path in ("/", "/decisions", f"/decisions/{site['blocked']}", "/rules", "/kill-switch", "/learning", "/audit?verify=1"):
        page.goto(site["url"] + path)
        page.wait_for_load_state("networkidle") if path != "/" else page.wait_for_selector("#live:has-text('Live')")
    screenshot(page, shots, "audit-dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)", background  # dark mode follows prefers-color-scheme
    ours = urlsplit(site["url"]).netloc
    assert seen and {urlsplit(u).netloc for u in seen} == {ours}, sorted({urlsplit(u).netloc for u in seen})
    assert any(u.endswith("/static/dashboard.css") for u in seen) and any(u.endswith("/static/dashboard.js") for u in seen)
    page.context.close()
