"""The chat page at ``GET /`` in headless Chromium, with no route to the internet.

The server is ``rtkit serve`` (demo mode mostly), started as a user starts it. Every
browser context aborts each request that is not for 127.0.0.1 or localhost and
records it: the page must work with the Socket.IO client rtkit ships. Chromium is
Debian's (``/usr/bin/chromium``): Playwright never downloads a browser. When a test
fails, a screenshot of each of its pages goes to ``tests/realtime/screenshots/``
(git-ignored; ``RTKIT_SCREENSHOTS`` names another folder).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Locator,
    Page,
    Route,
    async_playwright,
    expect,
)
from rtkit_process import rtkit_serve, token_for

from rtkit.realtime import ChatClient, issue_token
from rtkit.realtime._page import BUILT_IN_CLIENT_JS, BUILT_IN_CLIENT_JS_URL
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
SCREENSHOTS = Path(os.environ.get("RTKIT_SCREENSHOTS", Path(__file__).parent / "screenshots"))
CDN_CLIENT_JS = "https://cdn.socket.io/4.8.3/socket.io.min.js"
# socket.io's own documentation gives this hash for that URL.
PUBLISHED_INTEGRITY = "sha384-kzavj5fiMwLKzzD1f8S7TeoVIEi7uKHvbTA3ueZkrzYq75pNQUiUi6Dy98Q3fxb0"
XSS = "<img src=x onerror=alert(1)><b>bold</b>"
TIMEOUT_MS = 20_000
PHONE = {"width": 390, "height": 844}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with a fresh profile (Playwright's temporary one)."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        require(f"{CHROMIUM} is missing (make testdeps installs Debian's chromium)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Person:
    """One browser context (its own storage) with one tab on the chat page."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.blocked: list[str] = []  # requests for other hosts, aborted
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.problems.append(f"console: {message.text}")

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    async def _offline(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            await route.fallback()
        else:
            self.blocked.append(route.request.url)
            await route.abort("internetdisconnected")

    async def goto(self, url: str) -> None:
        response = await self.page.goto(url)
        assert response is not None and response.ok

    async def log_in(self, name: str) -> None:
        """Log in by name (demo mode) and wait for the socket to be connected."""
        await self.page.fill("#login-name", name)
        await self.page.click("#login-button")
        await expect(self.page.locator("#status")).to_have_text("online")

    async def join(self, room: str) -> None:
        """Join ``room`` with the form and wait until the page shows it."""
        if await self.page.locator("#sidebar-toggle").is_visible():
            await self.page.click("#sidebar-toggle")
        await self.page.fill("#room-id", room)
        await self.page.click("#room-join")
        await expect(self.page.locator("#current-room")).to_have_text(room)

    async def say(self, text: str) -> None:
        """Type ``text`` into the message box and press Enter."""
        await self.page.locator("#message-input").press_sequentially(text)
        await self.page.press("#message-input", "Enter")
        await expect(self.page.locator("#message-input")).to_have_value("")

    async def share(self, name: str, data: bytes) -> None:
        """Pick a file with the file picker and wait until it is shared."""
        await self.page.set_input_files(
            "#file-input",
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}],
        )
        await expect(self.page.locator("#upload-status")).to_have_text(re.compile("^shared"))

    async def download(self, link: Locator) -> tuple[str, bytes]:
        """Click a file link; the downloaded file's name and bytes."""
        async with self.page.expect_download() as info:
            await link.click()
        download = await info.value
        saved = Path(await download.path())
        return download.suggested_filename, await asyncio.to_thread(saved.read_bytes)

    def message_texts(self) -> Locator:
        """The text of every chat message shown."""
        return self.page.locator("#messages li.message .text")

    def entries(self) -> Locator:
        """Every line of the conversation: messages, files, joins and leaves."""
        return self.page.locator("#messages > li")

    def assert_clean(self) -> None:
        assert self.problems == []
        assert self.dialogs == []
        assert self.blocked == []


class People:
    """Opens people on the chat page; screenshots them all when the test failed."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.everyone: list[Person] = []

    async def open(
        self, url: str, *, viewport: dict[str, int] | None = None, route_cdn: Any = None
    ) -> Person:
        """A new person on the page at ``url``, offline but for ``route_cdn(route)``."""
        context = await self.browser.new_context(
            viewport=viewport or {"width": 1100, "height": 700}, accept_downloads=True
        )
        page = await context.new_page()
        person = Person(context, page)
        self.everyone.append(person)
        page.set_default_timeout(TIMEOUT_MS)
        await context.route("**/*", person._offline)
        if route_cdn is not None:  # (the route added last is asked first)
            await context.route(CDN_CLIENT_JS, route_cdn)
        await person.goto(url)
        return person

    async def screenshots(self, test: str) -> None:
        await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
        for number, person in enumerate(self.everyone):
            path = SCREENSHOTS / f"{test}-{number}.png"
            try:
                await person.page.screenshot(path=str(path), full_page=True, timeout=5_000)
            except Exception as exc:  # a page that crashed has no picture
                print(f"no screenshot of page {number}: {exc}")  # noqa: T201
            else:
                print(f"screenshot: {path}")  # noqa: T201


@pytest.fixture
async def people(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[People]:
    """Opens people on the chat page; on failure each page's screenshot is saved."""
    crowd = People(browser)
    yield crowd
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        await crowd.screenshots(re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))


async def test_two_people_chat_in_the_browser_and_html_stays_text(people: People) -> None:
    room = unique("lobby")
    async with rtkit_serve("--demo") as server:
        alice = await people.open(server.url)
        await alice.log_in("Alice")
        await alice.join(room)
        bob = await people.open(server.url)
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
        await expect(alice.page.locator("#messages .message .author")).to_have_text(["Bob"])
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

        # Someone who joins later sees the history, names made of HTML included.
        carol = await people.open(server.url)
        await carol.log_in("Carol <i>")
        await carol.join(room)
        await expect(carol.message_texts()).to_have_text(["hello Alice", XSS])
        await expect(alice.page.locator("#room-users .name")).to_have_text(
            ["Alice", "Bob", "Carol <i>"]
        )
        await expect(alice.entries().last).to_have_text(re.compile(r"^Carol <i> joined"))

        # A notification names its sender once: "Alice waves at you".
        await alice.page.locator("#online-users li", has_text="Carol").locator(".wave").click()
        notification = carol.page.locator("#notifications .notification")
        await expect(notification).to_have_count(1)
        await expect(notification).to_have_text("Alice waves at you")
        await expect(notification.locator(".from")).to_have_text("Alice")

        # Bob logs out: the others see him go.
        await bob.page.click("#logout")
        alice_online = alice.page.locator("#online-users .name")
        await expect(alice_online.filter(has_text="Bob")).to_have_count(0)
        await expect(alice.page.locator("#room-users .name")).to_have_text(["Alice", "Carol <i>"])
        await expect(alice.entries().last).to_have_text(re.compile(r"^Bob left"))

        for person in (alice, bob, carol):
            person.assert_clean()


async def test_the_page_works_with_no_route_to_the_internet(people: People) -> None:
    # The page loads the Socket.IO client rtkit ships, from the server itself: every
    # request for another host would be aborted and recorded, and there is none.
    room = unique("offline")
    async with rtkit_serve("--demo") as server:
        ada = await people.open(server.url)
        script = ada.page.locator("script#socket-io-client")
        assert await script.get_attribute("src") == BUILT_IN_CLIENT_JS_URL
        icon = await ada.page.locator("link[rel=icon]").get_attribute("href") or ""
        async with httpx.AsyncClient(base_url=server.url) as http:
            favicon = await http.get(icon)
            client = await http.get(BUILT_IN_CLIENT_JS_URL)
        assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/svg+xml"
        assert client.status_code == 200 and client.content == BUILT_IN_CLIENT_JS.read_bytes()

        await ada.log_in("Ada")
        await ada.join(room)
        ben = await people.open(server.url)
        await ben.log_in("Ben")
        await ben.join(room)
        await ada.say("no internet needed")
        await expect(ben.message_texts()).to_have_text(["no internet needed"])
        for person in (ada, ben):
            person.assert_clean()


async def test_a_cdn_client_is_pinned_by_its_integrity_and_a_failure_says_why(
    people: People,
) -> None:
    pinned = BUILT_IN_CLIENT_JS.read_bytes()

    async def cdn(route: Route) -> None:
        await route.fulfill(
            body=pinned,
            content_type="application/javascript",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    async def tampered(route: Route) -> None:
        await route.fulfill(
            body=pinned + b"\n;window.stolen = true;",
            content_type="application/javascript",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    room = unique("cdn")
    async with rtkit_serve("--demo", "--client-js-url", CDN_CLIENT_JS) as server:
        # The CDN's file is the pinned one: the page checks it and chats.
        ann = await people.open(server.url, route_cdn=cdn)
        script = ann.page.locator("script#socket-io-client")
        assert await script.get_attribute("src") == CDN_CLIENT_JS
        assert await script.get_attribute("integrity") == PUBLISHED_INTEGRITY
        assert await script.get_attribute("crossorigin") == "anonymous"
        await expect(ann.page.locator("#client-missing")).to_be_hidden()
        await ann.log_in("Ann")
        await ann.join(room)
        await ann.say("from the CDN")
        await expect(ann.message_texts()).to_have_text(["from the CDN"])
        ann.assert_clean()

        # A changed file is refused by the browser; no internet at all neither loads:
        # either way the page says what happened and what to do, and offers no login.
        changed = await people.open(server.url, route_cdn=tampered)
        unreachable = await people.open(server.url)
        assert unreachable.blocked == [CDN_CLIENT_JS]
        unreachable.blocked.clear()
        for person in (changed, unreachable):
            problem = person.page.locator("#client-missing")
            await expect(problem).to_be_visible()
            await expect(problem).to_contain_text(f"did not load from {CDN_CLIENT_JS}")
            await expect(problem).to_contain_text("integrity")
            await expect(problem).to_contain_text("without --client-js-url")
            await expect(person.page.locator("#login-button")).to_be_disabled()
            assert await person.page.evaluate("window.stolen === undefined")
            assert person.problems == [] and person.blocked == []


async def test_without_demo_the_page_asks_for_a_token_and_shows_refusals(people: People) -> None:
    async with rtkit_serve() as server:
        dave = await people.open(server.url)
        await expect(dave.page.locator("#login-name")).to_be_hidden()

        # A token signed with another secret is refused at the handshake, clearly.
        await dave.page.fill("#login-token", issue_token("not-the-secret-" + "q" * 40, "dave"))
        await dave.page.click("#login-button")
        await expect(dave.page.locator("#errors .error")).to_contain_text("token is invalid")
        await expect(dave.page.locator("#login-message")).to_contain_text("token is invalid")
        await expect(dave.page.locator("#login-token")).to_be_visible()

        await dave.page.fill("#login-token", token_for(unique("dave"), "Dave"))
        await dave.page.click("#login-button")
        await expect(dave.page.locator("#status")).to_have_text("online")
        await expect(dave.page.locator("#me")).to_have_text("Signed in as Dave")
        await expect(dave.page.locator("#online-users .name")).to_have_text(["Dave"])
        dave.assert_clean()


async def test_an_expired_token_logs_the_page_out_and_says_so(people: People) -> None:
    async with rtkit_serve() as server:
        eve = await people.open(server.url)
        await eve.page.fill("#login-token", token_for(unique("eve"), "Eve", ttl=3))
        await eve.page.click("#login-button")
        await expect(eve.page.locator("#status")).to_have_text("online")
        # The server ends the session when the token expires (token_expired): the page
        # goes back to the login and says why.
        await expect(eve.page.locator("#login-message")).to_have_text(
            "Your session expired: log in again.", timeout=15_000
        )
        await expect(eve.page.locator("#chat")).to_be_hidden()
        await expect(eve.page.locator("#status")).to_have_text("offline")
        assert await eve.page.evaluate("sessionStorage.getItem('rtkit.token')") is None
        eve.assert_clean()


async def test_the_page_reconnects_and_rejoins_its_room_after_a_server_restart(
    people: People,
) -> None:
    room = unique("lobby")
    port = free_port()
    async with rtkit_serve("--demo", port=port) as server:
        erin, finn = await people.open(server.url), await people.open(server.url)
        for person, name in ((erin, "Erin"), (finn, "Finn")):
            await person.log_in(name)
            await person.join(room)
        await server.kill()  # a crash: no goodbye to the pages
        for person in (erin, finn):
            await expect(person.page.locator("#status")).to_have_text("reconnecting…")

    # The same secret (RTKIT_SECRET) on the same address: the tokens are still good.
    async with rtkit_serve("--demo", port=port):
        for person in (erin, finn):
            await expect(person.page.locator("#status")).to_have_text("online", timeout=30_000)
            await expect(person.page.locator("#room-users .name")).to_have_text(["Erin", "Finn"])
        await finn.say("back again")
        await expect(erin.message_texts()).to_have_text(["back again"])
        for person in (erin, finn):
            assert person.problems == [] and person.blocked == []


async def test_share_a_file_with_a_progress_bar_and_download_it(people: People) -> None:
    room = unique("files")
    data = os.urandom(3 * 1024 * 1024)
    async with rtkit_serve("--demo") as server:
        alice, bob = await people.open(server.url), await people.open(server.url)
        await alice.log_in("Alice")
        await alice.join(room)
        await bob.log_in("Bob")
        await bob.join(room)

        # Alice picks a file: a progress bar fills while the bytes go up.
        await expect(alice.page.locator("#upload")).to_be_hidden()
        await alice.share("big <notes>.bin", data)
        await expect(alice.page.locator("#upload-progress")).to_have_js_property("value", 100)
        await expect(alice.page.locator("#upload-name")).to_have_text("big <notes>.bin")

        # Both see the share; each downloads it with a link signed for them, no token.
        for person in (bob, alice):
            line = person.page.locator("#messages li.file").last
            shown = re.compile(r"^Alice shared big <notes>\.bin \(3\.0 MB\)")
            await expect(line).to_have_text(shown)
            link = line.locator("a.file-link")
            href = await link.get_attribute("href") or ""
            token = await person.page.evaluate("sessionStorage.getItem('rtkit.token')")
            assert "signature=" in href and "token" not in href and token not in href
            name, got = await person.download(link)
            assert (name, got == data) == ("big _notes_.bin", True)  # Chromium's safe name

        # A file sent from Python shows up the same way.
        async with httpx.AsyncClient(base_url=server.url) as http:
            login = (await http.post("/api/demo/login", json={"name": "Carl"})).json()
        carl = ChatClient(reconnection=False)
        await carl.connect(server.url, login["token"])
        await carl.join_room(room)
        await carl.upload(room, "notes.txt", b"shared from python")
        link = bob.page.locator("#messages li.file a.file-link").last
        await expect(link).to_have_text("notes.txt")
        assert await bob.download(link) == ("notes.txt", b"shared from python")
        await carl.close()
        for person in (alice, bob):
            person.assert_clean()


async def test_the_room_list_joins_rooms_and_counts_unread_messages(people: People) -> None:
    red, blue = unique("red"), unique("blue")
    async with rtkit_serve("--demo") as server:
        alice = await people.open(server.url)
        await alice.log_in("Alice")
        await alice.join(red)
        await alice.join(blue)  # Alice is in both and sees blue

        # Bob finds both rooms in the list, with how many are in each, and joins red.
        bob = await people.open(server.url)
        await bob.log_in("Bob")
        rooms = bob.page.locator("#rooms li")
        for room in (red, blue):
            item = rooms.filter(has=bob.page.locator(".room-name", has_text=room))
            await expect(item.locator(".count")).to_have_text("1")
        await rooms.filter(has_text=red).locator("button").click()
        await expect(bob.page.locator("#current-room")).to_have_text(red)
        await expect(rooms.filter(has_text=red)).to_have_class(re.compile(r"\bcurrent\b"))

        # Bob speaks in red while Alice looks at blue: red shows one unread message.
        await bob.say("over here")
        alice_red = alice.page.locator("#rooms li", has_text=red)
        await expect(alice_red.locator(".unread")).to_have_text("1")
        await expect(alice.message_texts()).to_have_count(0)
        await alice_red.locator("button").click()
        await expect(alice.page.locator("#current-room")).to_have_text(red)
        await expect(alice.message_texts()).to_have_text(["over here"])
        await expect(alice_red.locator(".unread")).to_have_count(0)

        # Bob leaves red with its button: Alice sees him go, his list shows him out.
        await bob.page.click("#room-leave")
        await expect(bob.page.locator("#current-room")).to_have_text("(none)")
        await expect(alice.entries().last).to_have_text(re.compile(r"^Bob left"))
        await expect(alice.page.locator("#room-users .name")).to_have_text(["Alice"])
        await expect(bob.page.locator("#rooms li.joined")).to_have_count(0)
        for person in (alice, bob):
            person.assert_clean()


async def test_a_reload_keeps_the_rooms_and_history_shows_shares_joins_and_leaves(
    people: People,
) -> None:
    room, other = unique("keep"), unique("other")
    async with rtkit_serve("--demo") as server:
        alice, bob = await people.open(server.url), await people.open(server.url)
        await alice.log_in("Alice")
        await alice.join(other)
        await alice.join(room)
        await bob.log_in("Bob")
        await bob.join(room)
        await bob.share("plan.txt", b"the plan")
        await bob.say("see the plan")
        await bob.page.click("#room-leave")
        await expect(alice.entries().last).to_have_text(re.compile(r"^Bob left"))

        # A reload: the same tab keeps its session, and the page its rooms (localStorage).
        await alice.page.reload()
        await expect(alice.page.locator("#status")).to_have_text("online")
        await expect(alice.page.locator("#current-room")).to_have_text(room)
        await expect(alice.page.locator("#rooms li.joined .room-name")).to_have_text(
            sorted([room, other])
        )
        # The history has everything that happened, in order, with the file to download.
        lines = [
            r"^Alice joined",
            r"^Bob joined",
            r"^Bob shared plan\.txt \(8 B\)",
            r"^Bob.*see the plan$",
            r"^Bob left",
            r"^Alice left",  # the reload ended a connection...
            r"^Alice joined",  # ... and the new one joined again
        ]
        await expect(alice.entries()).to_have_text([re.compile(line) for line in lines])
        link = alice.page.locator("#messages li.file a.file-link")
        assert await alice.download(link) == ("plan.txt", b"the plan")

        # Bob comes back: his page rejoins nothing (he left), the list still offers the room.
        await bob.page.reload()
        await expect(bob.page.locator("#status")).to_have_text("online")
        await expect(bob.page.locator("#current-room")).to_have_text("(none)")
        await bob.page.locator("#rooms li", has_text=room).locator("button").click()
        await expect(bob.message_texts()).to_have_text(["see the plan"])
        for person in (alice, bob):
            person.assert_clean()


async def test_at_390_px_the_message_box_stays_on_screen(people: People) -> None:
    room = unique("phone")
    async with rtkit_serve("--demo") as server:
        phone = await people.open(server.url, viewport=PHONE)
        await phone.log_in("Pat, whose name is rather long for a phone screen")
        await phone.join(room)
        await expect(phone.page.locator("#sidebar")).to_be_hidden()  # joining closed it
        for i in range(12):
            await phone.say(f"line {i} " + "wrapping words " * 8)
        await phone.say("x" * 300)  # one long word must not widen the page
        await expect(phone.message_texts()).to_have_count(13)
        await phone.share("a file with a long name, " * 4 + ".txt", b"small")

        async def on_screen(selector: str) -> None:
            box = await phone.page.locator(selector).bounding_box()
            assert box is not None, selector
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (selector, box)

        for selector in ("#message-input", "#message-send", "#file-button", "#sidebar-toggle"):
            await on_screen(selector)
        width = await phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        # The newest message is in view above the box.
        await expect(phone.message_texts().last).to_be_in_viewport()

        # The rooms and people open over the conversation and close on a choice.
        await phone.page.click("#sidebar-toggle")
        await expect(phone.page.locator("#sidebar")).to_be_visible()
        await on_screen("#room-join")
        await phone.page.locator("#rooms li", has_text=room).locator("button").click()
        await expect(phone.page.locator("#sidebar")).to_be_hidden()
        await on_screen("#message-input")
        phone.assert_clean()
