"""The chat page at ``GET /`` in headless Chromium: two people chat, HTML shows as text.

The server is ``rtkit serve --demo``; the page loads the official Socket.IO client
from a URL that the browser context answers with the copy installed from the npm
registry (``make testdeps``), so nothing leaves the machine. Chromium is Debian's
(``/usr/bin/chromium``): Playwright never downloads a browser.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Locator, Page, async_playwright, expect
from rtkit_process import CLIENT_JS, rtkit_serve, token_for

from rtkit.realtime import ChatClient, issue_token
from rtkit_testing import free_port, require
from rtkit_testing import unique_name as unique

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("RTKIT_CHROMIUM", "/usr/bin/chromium")
# The network is closed here: without these flags Chromium stalls on its own traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLIENT_JS_URL = "https://socket-io-client.rtkit.invalid/socket.io.min.js"
XSS = "<img src=x onerror=alert(1)><b>bold</b>"
SCREENSHOT = Path(tempfile.gettempdir()) / "rtkit-chat-page.png"
TIMEOUT_MS = 20_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with a fresh profile (Playwright's temporary one)."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        require(f"{CHROMIUM} is missing (make testdeps installs Debian's chromium)")
    if not CLIENT_JS.is_file():
        require("socket.io-client is not installed (run make testdeps)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Person:
    """One browser tab using the chat page, with what went wrong in it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    @classmethod
    async def open(cls, browser: Browser, url: str) -> Person:
        """A new browser context (own storage) on the chat page."""
        context = await browser.new_context(viewport={"width": 1100, "height": 700})
        await context.route(
            CLIENT_JS_URL,
            lambda route: route.fulfill(path=CLIENT_JS, content_type="application/javascript"),
        )
        person = cls(await context.new_page())
        person.page.set_default_timeout(TIMEOUT_MS)
        response = await person.page.goto(url)
        assert response is not None and response.ok
        return person

    async def log_in(self, name: str) -> None:
        """Log in by name (demo mode) and wait for the socket to be connected."""
        await self.page.fill("#login-name", name)
        await self.page.click("#login-button")
        await expect(self.page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)

    async def join(self, room: str) -> None:
        """Join ``room`` and wait until the page shows it."""
        await self.page.fill("#room-id", room)
        await self.page.click("#room-join")
        await expect(self.page.locator("#current-room")).to_have_text(room, timeout=TIMEOUT_MS)

    async def say(self, text: str) -> None:
        """Type ``text`` into the message box and press Enter."""
        await self.page.locator("#message-input").press_sequentially(text)
        await self.page.press("#message-input", "Enter")

    def message_texts(self) -> Locator:
        """The text of every message shown."""
        return self.page.locator("#messages li.message .text")


async def test_two_people_chat_in_the_browser_and_html_stays_text(browser: Browser) -> None:
    room = unique("lobby")
    async with rtkit_serve("--demo", "--client-js-url", CLIENT_JS_URL) as server:
        alice = await Person.open(browser, server.url)
        await alice.log_in("Alice")
        await alice.join(room)
        bob = await Person.open(browser, server.url)
        await bob.log_in("Bob")
        await bob.join(room)

        # Who is online and who is in the room, on both pages.
        for person in (alice, bob):
            online = person.page.locator("#online-users .name")
            await expect(online.filter(has_text="Alice")).to_have_count(1)
            await expect(online.filter(has_text="Bob")).to_have_count(1)
            room_users = person.page.locator("#room-users .name")
            await expect(room_users).to_have_text(["Alice", "Bob"])

        # Bob types: Alice sees it; Bob sends: Alice gets the message, the typing line goes.
        await bob.page.locator("#message-input").press_sequentially("hello ")
        await expect(alice.page.locator("#typing")).to_have_text("Bob is typing…")
        await bob.page.locator("#message-input").press_sequentially("Alice")
        await bob.page.press("#message-input", "Enter")
        await expect(alice.message_texts()).to_have_text(["hello Alice"])
        await expect(alice.page.locator("#messages .author")).to_have_text(["Bob"])
        await expect(alice.page.locator("#typing")).to_have_text("")

        # A message made of HTML is shown as text: no element, no script.
        await alice.say(XSS)
        await expect(bob.message_texts()).to_have_text(["hello Alice", XSS])
        await expect(alice.message_texts()).to_have_text(["hello Alice", XSS])
        for person in (alice, bob):
            assert await person.page.locator("#messages img, #messages b").count() == 0
            assert await person.message_texts().last.inner_html() == (
                "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;"
            )

        # Someone who joins later sees the history.
        carol = await Person.open(browser, server.url)
        await carol.log_in("Carol <i>")
        await carol.join(room)
        await expect(carol.message_texts()).to_have_text(["hello Alice", XSS])
        await expect(alice.page.locator("#room-users .name")).to_have_text(
            ["Alice", "Bob", "Carol <i>"]
        )
        await alice.page.wait_for_timeout(300)  # let the last render settle for the picture
        await alice.page.screenshot(path=str(SCREENSHOT))

        # Notifications: Alice waves at Carol.
        await alice.page.locator("#online-users li", has_text="Carol").locator(".wave").click()
        notification = carol.page.locator("#notifications .notification")
        await expect(notification).to_have_count(1)
        await expect(notification.locator(".content")).to_have_text("Alice waves at you")
        await expect(notification.locator(".from")).to_have_text("Alice")

        # Bob leaves: the others see him go.
        await bob.page.click("#logout")
        alice_online = alice.page.locator("#online-users .name")
        await expect(alice_online.filter(has_text="Bob")).to_have_count(0)
        await expect(alice.page.locator("#room-users .name")).to_have_text(["Alice", "Carol <i>"])

        for person in (alice, bob, carol):
            assert person.problems == []
            assert person.dialogs == []


async def test_without_demo_the_page_asks_for_a_token_and_shows_refusals(browser: Browser) -> None:
    async with rtkit_serve("--client-js-url", CLIENT_JS_URL) as server:
        dave = await Person.open(browser, server.url)
        await expect(dave.page.locator("#login-name")).to_be_hidden()

        # A token signed with another secret is refused at the handshake, clearly.
        await dave.page.fill("#login-token", issue_token("not-the-secret-" + "q" * 40, "dave"))
        await dave.page.click("#login-button")
        await expect(dave.page.locator("#errors .error")).to_contain_text("token is invalid")
        await expect(dave.page.locator("#login-token")).to_be_visible()

        await dave.page.fill("#login-token", token_for(unique("dave"), "Dave"))
        await dave.page.click("#login-button")
        await expect(dave.page.locator("#status")).to_have_text("online")
        await expect(dave.page.locator("#me")).to_have_text("Signed in as Dave")
        await expect(dave.page.locator("#online-users .name")).to_have_text(["Dave"])
        assert dave.problems == []


async def test_the_page_reconnects_and_rejoins_its_room_after_a_server_restart(
    browser: Browser,
) -> None:
    room = unique("lobby")
    port = free_port()
    args = ("--demo", "--client-js-url", CLIENT_JS_URL)
    async with rtkit_serve(*args, port=port) as server:
        erin, finn = await Person.open(browser, server.url), await Person.open(browser, server.url)
        for person, name in ((erin, "Erin"), (finn, "Finn")):
            await person.log_in(name)
            await person.join(room)
        await server.kill()  # a crash: no goodbye to the pages
        for person in (erin, finn):
            await expect(person.page.locator("#status")).to_have_text("reconnecting…")

    # The same secret (RTKIT_SECRET) on the same address: the tokens are still good.
    async with rtkit_serve(*args, port=port):
        for person in (erin, finn):
            await expect(person.page.locator("#status")).to_have_text("online", timeout=30_000)
            await expect(person.page.locator("#room-users .name")).to_have_text(["Erin", "Finn"])
        await finn.say("back again")
        await expect(erin.message_texts()).to_have_text(["back again"])
        for person in (erin, finn):
            assert person.problems == []


async def test_a_shared_file_downloads_from_its_link_in_the_page(browser: Browser) -> None:
    # The page used to link /api/uploads/<id> bare, which answered 401: its link now
    # carries a short-lived signature for that file and user, never a token.
    room = unique("files")
    async with rtkit_serve("--demo", "--client-js-url", CLIENT_JS_URL) as server:
        bob = await Person.open(browser, server.url)
        await bob.log_in("Bob")
        await bob.join(room)
        async with httpx.AsyncClient(base_url=server.url) as http:
            login = (await http.post("/api/demo/login", json={"name": "Alice"})).json()
        alice = ChatClient(reconnection=False)
        await alice.connect(server.url, login["token"])
        await alice.join_room(room)
        await alice.upload(room, "notes.txt", b"shared from python")

        link = bob.page.locator("#messages li.system a")
        await expect(link).to_have_text("notes.txt")
        href = await link.get_attribute("href") or ""
        bob_token = await bob.page.evaluate("sessionStorage.getItem('rtkit.token')")
        assert "token=" not in href and bob_token not in href and login["token"] not in href
        assert "signature=" in href
        async with bob.page.expect_download() as info:
            await link.click()
        download = await info.value
        saved = Path(await download.path())
        assert await asyncio.to_thread(saved.read_bytes) == b"shared from python"
        assert download.suggested_filename == "notes.txt"
        await alice.close()
        assert bob.problems == []
