"""The dashboard in a real browser (Debian's Chromium), against a live
gateway with fake upstreams: sign-in, keys shown once and used with the
openai SDK, the request log, the balance, charts and CSV, idempotent
credits, admin-only pages, escaping, CSRF and the session cookie."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llm_gateway.auth.credentials import hash_secret
from tests.conftest import AUTH, MASTER_KEY, Stack
from tests.fakes import openai_server
from tests.ui.browser import SCREENSHOTS

PASSWORD = "correct horse battery"
ADMIN_PAGES = ["/ui/admin/users", "/ui/admin/spend", "/ui/admin/models"]


def new_user(stack: Stack, credit: str | None = "10", email: str | None = None, role: str = "user") -> dict[str, Any]:
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    made = httpx.post(f"{stack.url}/admin/users", json={"email": email, "password": PASSWORD, "role": role},
                      headers=AUTH, timeout=10)
    assert made.status_code == 201, made.text
    user: dict[str, Any] = made.json()
    if credit is not None:
        added = httpx.post(f"{stack.url}/admin/users/{user['id']}/credits", json={"amount_usd": credit},
                           headers=AUTH, timeout=10)
        assert added.status_code == 201, added.text
    return user


def balance_of(stack: Stack, user_id: str) -> Decimal:
    got = httpx.get(f"{stack.url}/admin/users/{user_id}", headers=AUTH, timeout=10)
    return Decimal(got.json()["balance_usd"])


def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.goto("/ui/login")
    page.fill("#password-form input[name=email]", email)
    page.fill("#password-form input[name=password]", password)
    page.click("#password-form button[type=submit]")
    page.wait_for_url("**/ui/")


def sign_in_with_key(page: Any, key: str) -> None:
    page.goto("/ui/login")
    page.fill("#key-form input[name=api_key]", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_url("**/ui/")


def eventually(check: Callable[[], bool], what: str, attempts: int = 50) -> None:
    """Retry ``check`` (which reloads what it reads) until it holds: a charge
    is written just after an answer ends."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(what)


def chart_total(page: Any, chart: str) -> float:
    page.wait_for_selector(f"#{chart}[data-total]", state="attached")
    return float(page.get_attribute(f"#{chart}", "data-total"))


def test_user_signs_in_creates_a_key_uses_it_and_sees_the_request_everywhere(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack)
    sign_in(page, user["email"])
    assert page.inner_text("#balance") == "$10.00"
    assert chart_total(page, "chart-requests") == 0

    page.goto("/ui/keys")
    page.fill("#create-key-form input[name=name]", "sdk key")
    page.fill("#create-key-form input[name=budget_usd]", "5")
    page.fill("#create-key-form input[name=rpm]", "100")
    page.click("#create-key-form button[type=submit]")
    key = page.inner_text("#new-key-value").strip()
    assert key.startswith("gw-") and len(key) > 35
    assert page.is_visible("button[data-copy-target=new-key-value]")
    page.goto("/ui/keys")  # shown once: never again
    assert key not in page.content() and key[:11] in page.inner_text("#keys-table")
    assert "$5.00 / month" in page.inner_text("#keys-table")

    client = openai.OpenAI(base_url=f"{ui_stack.url}/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model="pricey", messages=[{"role": "user", "content": "Hi from the dashboard test"}])
    cost = Decimal(answer.headers["x-gateway-cost-usd"])
    assert cost > 0
    eventually(lambda: balance_of(ui_stack, user["id"]) == Decimal(10) - cost, "the charge was never recorded")

    page.goto("/ui/requests")
    row = page.locator("#requests-table tbody tr").first
    assert "pricey" in row.inner_text() and "200" in row.inner_text()
    row.locator("a").click()
    details = page.inner_text("#request-details")
    assert "oai/gpt-4o-mini" in details and "chat" in details

    page.goto("/ui/")
    assert page.inner_text("#balance") == f"${Decimal(10) - cost:,.2f}"
    assert chart_total(page, "chart-requests") == 1
    assert chart_total(page, "chart-spend") > 0

    page.goto("/ui/balance")
    ledger = page.locator("#ledger-table tbody tr")
    assert ledger.count() == 2  # the credit, then the charge (newest first)
    assert "charge" in ledger.first.inner_text() and "credit" in ledger.nth(1).inner_text()

    page.goto("/ui/usage")
    assert "pricey" in page.inner_text("#usage-table tbody")
    with page.expect_download() as download:
        page.click("#csv-link")
    csv_text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = csv_text.strip().splitlines()
    assert lines[0] == "group,requests,input_tokens,cached_input_tokens,output_tokens,cost_usd"
    assert len(lines) == 2 and lines[1].split(",")[1] == "1"

    page.goto("/ui/keys")
    page.once("dialog", lambda dialog: dialog.accept())  # "Revoke the key …?"
    page.click("#keys-table button:has-text('Revoke')")
    assert "Key revoked." in page.inner_text(".alert-ok") and "revoked" in page.inner_text("#keys-table")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="pricey", messages=[{"role": "user", "content": "again"}])


def test_playground_streams_an_answer_and_the_charge_shows_in_the_balance(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack)
    sign_in(page, user["email"])
    page.goto("/ui/playground")
    page.select_option("#pg-model", "pricey")
    page.fill("#pg-max-tokens", "20")
    page.click("#pg-send")
    page.wait_for_selector("#pg-status:has-text('done')")
    assert page.inner_text("#pg-output").strip()
    assert "oai/gpt-4o-mini" in page.inner_text("#pg-meta")
    eventually(lambda: balance_of(ui_stack, user["id"]) < Decimal(10), "the playground call was not charged")
    page.goto("/ui/balance")
    assert "charge" in page.locator("#ledger-table tbody tr").first.inner_text()
    assert page.inner_text("#balance") != "$10.00" or balance_of(ui_stack, user["id"]) > Decimal("9.995")


def test_admin_credit_twice_with_one_idempotency_key_credits_once(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack, credit=None)
    sign_in_with_key(page, MASTER_KEY)
    page.goto("/ui/admin/users?q=" + user["email"].split("@")[0])
    page.click(f"#users-table a:has-text('{user['email']}')")
    page.fill("#credit-form input[name=amount_usd]", "7.50")
    page.fill("#credit-form input[name=note]", "welcome")
    page.click("#credit-form button[type=submit]")
    assert "Credit recorded." in page.inner_text(".alert-ok")
    assert page.inner_text("#balance") == "$7.50"

    # The same form sent twice at once (a double click that got through, a resent form).
    statuses = page.evaluate("""async () => {
        const form = document.getElementById('credit-form');
        form.querySelector('input[name=amount_usd]').value = '2.25';
        const body = () => new URLSearchParams(new FormData(form));
        const send = () => fetch(form.action, {method: 'POST', body: body(), redirect: 'manual'});
        const answers = await Promise.all([send(), send()]);
        const again = await send();
        return [...answers, again].map(r => r.type === 'opaqueredirect' ? 303 : r.status);
    }""")
    assert statuses == [303, 303, 303]
    page.reload()
    assert page.inner_text("#balance") == "$9.75"
    assert balance_of(ui_stack, user["id"]) == Decimal("9.75")
    assert page.locator("#ledger-table tbody tr").count() == 2


def test_a_user_cannot_open_admin_pages(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack)
    other = new_user(ui_stack)
    sign_in(page, user["email"])
    assert page.locator("nav a[href='/ui/admin/users']").count() == 0
    for path in [*ADMIN_PAGES, f"/ui/admin/users/{other['id']}"]:
        response = page.goto(path)
        assert response.status == 403, path
        assert "Admins only" in page.inner_text("main")
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    refused = page.request.post(f"/ui/admin/users/{other['id']}/credit",
                                form={"csrf_token": csrf, "amount_usd": "100", "idempotency_key": "x"})
    assert refused.status == 403
    assert balance_of(ui_stack, other["id"]) == Decimal(10)


def test_an_xss_payload_renders_as_text(page: Any, ui_stack: Stack) -> None:
    email = f"<script>alert(1)</script>{uuid.uuid4().hex[:6]}@example.com"
    user = new_user(ui_stack, email=email)
    made = httpx.post(f"{ui_stack.url}/admin/users/{user['id']}/keys", json={"name": "<img src=x onerror=alert(2)>"},
                      headers=AUTH, timeout=10)
    assert made.status_code == 201
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in_with_key(page, MASTER_KEY)
    page.goto("/ui/admin/users")
    assert page.locator(f"#users-table a:has-text('{email}')").count() == 1
    page.goto(f"/ui/admin/users/{user['id']}")
    assert page.inner_text("#user-email") == email
    assert "<img src=x onerror=alert(2)>" in page.inner_text("#user-keys-table")
    page.goto("/ui/keys")
    assert "<img src=x onerror=alert(2)>" in page.inner_text("#keys-table")
    assert page.evaluate("document.querySelectorAll('img[src=x], script:not([src]):not([type])').length") == 0
    assert dialogs == []


def test_writes_need_the_csrf_token_and_the_cookie_is_no_api_credential(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack)
    sign_in(page, user["email"])
    cookie = next(c for c in page.context.cookies() if c["name"] == "gw_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.request.post("/ui/keys", form={"name": "no token"}).status == 403
    assert page.request.post("/ui/keys", form={"name": "wrong", "csrf_token": "nope"}).status == 403
    assert page.request.post("/ui/playground/chat", data={"model": "pricey", "messages": []}).status == 403
    page.goto("/ui/keys")
    assert "no token" not in page.content() and "wrong" not in page.inner_text("#keys-table")
    # The session cookie is scoped to /ui: /v1 never sees it, so it is not a credential there.
    answer = page.request.post("/v1/chat/completions", data={"model": "pricey", "messages": []})
    assert answer.status == 401
    response = page.goto("/ui/")
    csp = response.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert script_src.split() == ["script-src", "'self'"] and "unsafe-inline" not in csp
    page.click("text=Sign out")
    page.wait_for_url("**/ui/login")
    assert page.goto("/ui/keys").url.endswith("/ui/login")


def test_sign_in_is_throttled_like_the_api(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack, credit=None)
    for _ in range(5):
        page.goto("/ui/login")
        page.fill("#password-form input[name=email]", user["email"])
        page.fill("#password-form input[name=password]", "wrong password")
        page.click("#password-form button[type=submit]")
        assert "Incorrect email or password." in page.inner_text("#login-error")
    page.fill("#password-form input[name=password]", PASSWORD)  # right, but too late
    page.click("#password-form button[type=submit]")
    assert "Too many failed sign-in attempts" in page.inner_text("#login-error")
    assert page.url.endswith("/ui/login") and not [c for c in page.context.cookies() if c["name"] == "gw_ui"]


def test_no_secret_reaches_a_page(page: Any, ui_stack: Stack) -> None:
    user = new_user(ui_stack)
    made = httpx.post(f"{ui_stack.url}/admin/users/{user['id']}/keys", json={"name": "k"}, headers=AUTH, timeout=10)
    key = made.json()["key"]
    sign_in_with_key(page, MASTER_KEY)
    secrets = [MASTER_KEY, hash_secret(MASTER_KEY), key, hash_secret(key), openai_server.API_KEY, "$argon2"]
    for path in ["/ui/", "/ui/keys", "/ui/requests", "/ui/admin/users", f"/ui/admin/users/{user['id']}",
                 "/ui/admin/spend", "/ui/admin/models"]:
        page.goto(path)
        text = page.content()
        assert not [s for s in secrets if s in text], path


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_every_page_fits_the_screen(browser: Any, ui_stack: Stack, width: int, height: int) -> None:
    """Every page at a desktop and a phone width: nothing wider than the
    screen (wide tables scroll inside their card). The screenshots are kept
    under .ui-screenshots/pages for a person to look at."""
    user = new_user(ui_stack)
    key = httpx.post(f"{ui_stack.url}/admin/users/{user['id']}/keys", json={"name": "laptop"}, headers=AUTH,
                     timeout=10).json()["key"]
    openai.OpenAI(base_url=f"{ui_stack.url}/v1", api_key=key, max_retries=0).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Hello"}])
    folder = SCREENSHOTS / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(base_url=ui_stack.url, viewport={"width": width, "height": height})
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        page.goto("/ui/login")
        page.screenshot(path=str(folder / f"login-{width}.png"))
        sign_in_with_key(page, MASTER_KEY)
        pages = {"overview": "/ui/", "keys": "/ui/keys", "usage": "/ui/usage", "requests": "/ui/requests",
                 "balance": "/ui/balance", "playground": "/ui/playground", "users": "/ui/admin/users",
                 "user": f"/ui/admin/users/{user['id']}", "spend": "/ui/admin/spend", "models": "/ui/admin/models"}
        for name, path in pages.items():
            response = page.goto(path)
            assert response.status == 200, path
            page.wait_for_load_state("load")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px screen"
        page.goto("/ui/requests")
        page.locator("#requests-table tbody a").first.click()
        page.screenshot(path=str(folder / f"request-{width}.png"), full_page=True)
        ctx.clear_cookies()
        sign_in(page, user["email"])
        page.screenshot(path=str(folder / f"user-overview-{width}.png"), full_page=True)
    finally:
        ctx.close()
