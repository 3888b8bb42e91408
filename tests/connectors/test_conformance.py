"""One suite every connector in connectors.catalogue.CONNECTORS passes (meltano's shared tap
tests): how each failure is classified, secrets never in error texts, timeouts honoured.

The systems are local fakes on purpose: these tests are about our classification of an
answer, not about the system giving it (tests/connectors/<system>/ drive the real ones).
Each connector has a driver below saying how to make one call and what a good answer looks
like; a connector listed in CONNECTORS without a driver fails test_every_connector_has_a_driver.
Where a connector's policy differs from the shared default (connectors/http.py), its driver
names the difference, as its classify() does.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.bottlecrm.client import BottleCrm
from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.caldav.client import TaskList
from connectors.caldav.settings import CaldavSettings
from connectors.catalogue import CONNECTORS
from connectors.chatbots.client import ChatRobots
from connectors.chatbots.settings import ChatbotSettings
from connectors.filedrop.client import FileDrop
from connectors.filedrop.settings import FileDropSettings
from connectors.http import CREDENTIALS_RETRY_SECONDS
from connectors.matrix.client import MatrixClient
from connectors.matrix.settings import MatrixSettings
from connectors.smtp.client import Mailer
from connectors.smtp.settings import SmtpSettings
from connectors.spec import STATUSES, ConnectorSettings
from connectors.tryton.client import TrytonClient
from connectors.tryton.settings import TrytonSettings
from connectors.tryton_stock.settings import TrytonStockSettings
from connectors.tryton_stock.stock import TrytonStock
from crmhub.embedded import free_port
from crmhub.errors import HubError, PermanentError, TransientError


# -- what a call may end in --------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """OK (no error), or the hub error kind, with the wait it must carry."""

    kind: type[HubError] | None
    retry_after: float | None = None
    paused: bool = False  # "credentials refused": waits CREDENTIALS_RETRY_SECONDS


OK = Expect(None)
PERMANENT = Expect(PermanentError)
PAUSE = Expect(TransientError, CREDENTIALS_RETRY_SECONDS, paused=True)


def transient(retry_after: float | None = None) -> Expect:
    return Expect(TransientError, retry_after)


def texts_of(error: BaseException) -> list[str]:
    """What anyone may ever see of an error: str and repr of it and of its whole chain."""
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current), repr(getattr(current, "args", ""))]
        current = current.__cause__ or current.__context__
    return seen


def check(outcome: BaseException | None, expect: Expect, secrets: tuple[str, ...]) -> None:
    if expect.kind is None:
        assert outcome is None, f"expected a result, got {outcome!r}"
        return
    assert isinstance(outcome, expect.kind), f"expected {expect.kind.__name__}, got {outcome!r}"
    if isinstance(outcome, TransientError):
        assert outcome.retry_after == expect.retry_after, outcome
    if expect.paused:
        assert "credentials refused (check " in str(outcome), outcome
    assert outcome.system, f"{outcome!r} names no system (status could not say which is down)"
    for text in texts_of(outcome):
        for secret in secrets:
            assert secret not in text, f"a secret shows in {text!r}"


async def outcome_of(call: Awaitable[Any]) -> BaseException | None:
    try:
        await call
    except HubError as exc:
        return exc
    return None


# -- a local HTTP server whose answers each test scripts ----------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # accept the request and never answer (until the server stops)


Answer = Callable[[str, str, bytes], Reply]


def json_reply(value: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(value).encode(), {"Content-Type": "application/json",
                                                      **headers})


class FakeHttp:
    """ThreadingHTTPServer on 127.0.0.1; `answer(method, path, body)` decides each reply."""

    def __init__(self) -> None:
        self.answer: Answer = lambda *_: Reply(500)
        self.requests: list[tuple[str, str]] = []
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, self.path))
                reply = fake.answer(self.command, self.path, body)
                if reply.hang:
                    fake._stop.wait(30)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any
            do_PROPFIND = do_REPORT = do_OPTIONS = do_MKCALENDAR = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> FakeHttp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def fake_http() -> Iterator[FakeHttp]:
    with FakeHttp() as server:
        yield server


# -- one driver per HTTP connector --------------------------------------------------------------
SECRET = "conformance-secret-7f3a9c"  # every secret below contains it, so any leak is found


@dataclass(frozen=True)
class HttpDriver:
    """How to make one call of a connector against `url`, and how its system answers well.

    `login(method, path, body)` tells the requests that set up a session; in the status
    tests they are answered well, so the status reaches the call itself. `differs` lists
    what this connector's classify() does differently from the default, per status.
    """

    slug: str
    settings: Callable[[str, float], ConnectorSettings]
    call: Callable[[Any], Awaitable[Any]]
    ok: Answer
    secrets: tuple[str, ...]
    login: Callable[[str, str, bytes], bool] = lambda *_: False
    differs: dict[int, Expect] = field(default_factory=dict)
    rate_limit_wait: float | None = None
    reads_retry_after: bool = True
    #: environment the client's timeouts come from, when its own settings have none
    timeout_env: Callable[[float], dict[str, str]] = lambda _: {}


async def bottlecrm_call(settings: BottleCrmSettings) -> Any:
    async with BottleCrm(settings) as crm:
        return await crm.contacts_of("A-1")


def tryton_settings(url: str, timeout: float) -> TrytonSettings:
    return TrytonSettings(url=url, database="db", user="hub", password=f"pw-{SECRET}",
                          timeout_seconds=timeout, connect_timeout_seconds=timeout)


async def tryton_call(settings: TrytonSettings) -> Any:
    async with TrytonClient(settings) as client:
        return await client.search("party.party", [])


def tryton_ok(method: str, path: str, body: bytes) -> Reply:
    if b"common.db.login" in body:
        return json_reply({"id": 1, "result": [7, "session-token", None]})
    return json_reply({"id": 2, "result": {} if b"get_preferences" in body else []})


def tryton_login(method: str, path: str, body: bytes) -> bool:
    return b"common.db.login" in body or b"get_preferences" in body


async def tryton_stock_call(settings: TrytonStockSettings) -> Any:
    stock = TrytonStock(settings.client_settings())
    try:
        return await stock.changed_shipments(None)
    finally:
        await stock.aclose()


async def matrix_call(settings: MatrixSettings) -> Any:
    async with MatrixClient(settings) as client:
        return await client.send("!room:fake", "txn-1", {"msgtype": "m.text", "body": "hi"})


def matrix_ok(method: str, path: str, body: bytes) -> Reply:
    if path.endswith("/login"):
        return json_reply({"access_token": f"syt_{SECRET}", "user_id": "@bot:fake"})
    return json_reply({"event_id": "$event"})


async def chatbots_call(settings: ChatbotSettings) -> Any:
    robots = ChatRobots(settings)
    try:
        return await robots.send("dingtalk", {"msgtype": "text", "text": {"content": "hi"}})
    finally:
        await robots.aclose()


def dav(href: str, props: str) -> Reply:
    xml = ('<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" '
           'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:response>'
           f"<D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop>"
           "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>")
    return Reply(207, xml.encode(), {"Content-Type": "application/xml; charset=utf-8"})


def caldav_ok(method: str, path: str, body: bytes) -> Reply:
    """Just enough CalDAV for the library's discovery and an empty task search."""
    if b"current-user-principal" in body:
        return dav("/", "<D:current-user-principal><D:href>/p/</D:href>"
                        "</D:current-user-principal>")
    if b"calendar-home-set" in body:
        return dav("/p/", "<C:calendar-home-set><D:href>/cal/</D:href></C:calendar-home-set>")
    if method == "PROPFIND":
        return dav("/cal/crmhub-tasks/", "<D:resourcetype><D:collection/><C:calendar/>"
                                         "</D:resourcetype><D:displayname>t</D:displayname>")
    return Reply(207, b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"/>',
                 {"Content-Type": "application/xml"})


async def caldav_call(settings: CaldavSettings) -> Any:
    tasks = TaskList(settings)
    try:
        return await tasks.get("crmhub-conformance")
    finally:
        await tasks.aclose()


HTTP_DRIVERS = [
    HttpDriver(
        "bottlecrm",
        lambda url, t: BottleCrmSettings(url=url, token=f"bcrm_pat_{SECRET}",
                                         webhook_secret=f"whsec_{SECRET}", timeout_seconds=t,
                                         connect_timeout_seconds=t),
        bottlecrm_call, lambda *_: json_reply({"contact_obj_list": []}),
        secrets=(SECRET,),
        differs={403: PAUSE}),  # BottleCRM refuses a bad token with 403
    HttpDriver("tryton", tryton_settings, tryton_call, tryton_ok, secrets=(SECRET,),
               login=tryton_login, rate_limit_wait=60.0),
    HttpDriver(
        "tryton_stock",
        lambda url, t: TrytonStockSettings(url=url, database="db", user="hub",
                                           password=f"pw-{SECRET}"),
        tryton_stock_call, tryton_ok, secrets=(SECRET,), login=tryton_login,
        rate_limit_wait=60.0,
        # the SCM's client is a Tryton client: its timeouts are the ERP's TRYTON_* ones
        timeout_env=lambda t: {"TRYTON_TIMEOUT_SECONDS": str(t),
                               "TRYTON_CONNECT_TIMEOUT_SECONDS": str(t)}),
    HttpDriver(
        "matrix",
        lambda url, t: MatrixSettings(url=url, user="bot", password=f"pw-{SECRET}",
                                      room_id="!room:fake", timeout_seconds=t),
        matrix_call, matrix_ok, secrets=(SECRET,),
        login=lambda method, path, body: path.endswith("/login"), rate_limit_wait=5.0),
    HttpDriver(
        "chatbots",
        lambda url, t: ChatbotSettings(
            dingtalk_webhook=f"{url}/robot/send?access_token=tok-{SECRET}",
            dingtalk_secret=f"SEC{SECRET}", wecom_webhook=f"{url}/wecom?key=key-{SECRET}",
            feishu_webhook=f"{url}/feishu/{SECRET}", feishu_secret=f"fs-{SECRET}",
            timeout_seconds=t),
        chatbots_call, lambda *_: json_reply({"errcode": 0, "errmsg": "ok"}),
        secrets=(SECRET, "access_token="),
        differs={401: PERMANENT}),  # a refused robot key must not hold back the mails
    HttpDriver(
        "caldav",
        lambda url, t: CaldavSettings(url=f"{url}/", username="hub", password=f"pw-{SECRET}",
                                      timeout_seconds=max(1, round(t))),
        caldav_call, caldav_ok, secrets=(SECRET,),
        reads_retry_after=False),  # the caldav library keeps no response headers
]
BY_SLUG = {driver.slug: driver for driver in HTTP_DRIVERS}
ERROR_BODY = json.dumps({"detail": "refused by the fake", "errcode": "M_UNKNOWN",
                         "error": "refused by the fake"}).encode()

#: (status, Retry-After header) -> what the shared default makes of it
STATUSES_TRIED: list[tuple[int, str | None]] = [
    (400, None), (401, None), (403, None), (404, None), (409, None), (408, None),
    (429, "7"), (429, None), (500, None), (502, None), (503, "3"), (501, None)]


def default_expect(driver: HttpDriver, status: int, retry_after: str | None) -> Expect:
    if status in driver.differs:
        return driver.differs[status]
    if status == 401:
        return PAUSE
    if status in (408, 429) or (status >= 500 and status not in (501, 505)):
        if retry_after is not None and driver.reads_retry_after:
            return transient(float(retry_after))
        return transient(driver.rate_limit_wait if status == 429 else None)
    return PERMANENT


def test_every_connector_has_a_driver_and_a_sound_spec() -> None:
    slugs = [spec.slug for spec in CONNECTORS]
    assert len(slugs) == len(set(slugs))
    assert set(slugs) == {*BY_SLUG, "smtp", "filedrop"}, "a connector without a driver here"
    for spec in CONNECTORS:
        package = importlib.import_module(f"connectors.{spec.slug}")
        assert package.SPEC is spec
        assert spec.settings.__module__.startswith(f"connectors.{spec.slug}.")
        assert spec.settings.tables()[-1] == spec.slug  # its TOML table is its slug
        assert spec.status in STATUSES
        assert spec.summary and "\n" not in spec.summary and len(spec.summary) <= 100


@pytest.mark.parametrize("driver", HTTP_DRIVERS, ids=lambda d: d.slug)
async def test_a_good_answer_is_a_result(driver: HttpDriver, fake_http: FakeHttp) -> None:
    fake_http.answer = driver.ok
    check(await outcome_of(driver.call(driver.settings(fake_http.url, 5.0))), OK,
          driver.secrets)
    assert fake_http.requests, "the call reached the fake"


@pytest.mark.parametrize(("status", "retry_after"), STATUSES_TRIED,
                         ids=[f"{s}{'+retry-after' if r else ''}" for s, r in STATUSES_TRIED])
@pytest.mark.parametrize("driver", HTTP_DRIVERS, ids=lambda d: d.slug)
async def test_each_status_is_classified_by_the_shared_policy(
        driver: HttpDriver, status: int, retry_after: str | None, fake_http: FakeHttp) -> None:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after

    def answer(method: str, path: str, body: bytes) -> Reply:
        if driver.login(method, path, body):
            return driver.ok(method, path, body)
        return Reply(status, ERROR_BODY, headers)

    fake_http.answer = answer
    outcome = await outcome_of(driver.call(driver.settings(fake_http.url, 5.0)))
    check(outcome, default_expect(driver, status, retry_after), driver.secrets)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("driver", [d for d in HTTP_DRIVERS if d.slug in
                                    ("tryton", "tryton_stock", "matrix")], ids=lambda d: d.slug)
async def test_a_refused_login_pauses(driver: HttpDriver, status: int,
                                      fake_http: FakeHttp) -> None:
    def answer(method: str, path: str, body: bytes) -> Reply:
        if driver.login(method, path, body):
            return Reply(status, ERROR_BODY, {"Content-Type": "application/json"})
        return driver.ok(method, path, body)

    fake_http.answer = answer
    check(await outcome_of(driver.call(driver.settings(fake_http.url, 5.0))), PAUSE,
          driver.secrets)


@pytest.mark.parametrize("driver", HTTP_DRIVERS, ids=lambda d: d.slug)
async def test_a_silent_server_times_out_as_transient(
        driver: HttpDriver, fake_http: FakeHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in driver.timeout_env(1.0).items():
        monkeypatch.setenv(name, value)

    def answer(method: str, path: str, body: bytes) -> Reply:
        if driver.login(method, path, body):
            return driver.ok(method, path, body)
        return Reply(200, hang=True)

    fake_http.answer = answer
    started = time.monotonic()
    outcome = await outcome_of(driver.call(driver.settings(fake_http.url, 1.0)))
    elapsed = time.monotonic() - started
    check(outcome, transient(), driver.secrets)
    assert "timed out" in str(outcome), outcome
    assert elapsed < 10.0, f"the 1 s timeout was not honoured ({elapsed:.1f} s)"


@pytest.mark.parametrize("driver", HTTP_DRIVERS, ids=lambda d: d.slug)
async def test_a_refused_connection_is_transient(driver: HttpDriver) -> None:
    outcome = await outcome_of(driver.call(driver.settings(f"http://127.0.0.1:{free_port()}",
                                                           2.0)))
    check(outcome, transient(), driver.secrets)
    assert "unreachable" in str(outcome), outcome


@pytest.mark.parametrize("spec", [s for s in CONNECTORS if s.slug != "filedrop"],
                         ids=lambda s: s.slug)
def test_every_network_connector_has_a_finite_default_timeout(spec: Any) -> None:
    # tryton_stock's client is a Tryton client and takes TRYTON_TIMEOUT_SECONDS
    settings = TrytonSettings if spec.settings is TrytonStockSettings else spec.settings
    timeouts = {name: f.default for name, f in settings.model_fields.items()
                if name.endswith("timeout_seconds")}
    assert timeouts, f"{spec.slug} declares no timeout setting"
    assert all(isinstance(v, int | float) and 0 < v < math.inf for v in timeouts.values())


# -- SMTP: the same questions in reply codes -------------------------------------------------
class FakeSmtp:
    """A few lines of SMTP: greets, takes AUTH, answers MAIL FROM with `mail_reply` (or never
    greets when `silent`)."""

    def __init__(self, *, auth_reply: str = "235 2.7.0 ok", mail_reply: str = "250 ok",
                 silent: bool = False) -> None:
        self.auth_reply, self.mail_reply, self.silent = auth_reply, mail_reply, silent
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeSmtp:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
        try:
            if self.silent:
                await asyncio.sleep(30)
                return
            await say("220 fake ESMTP")
            while line := (await reader.readline()).decode().strip():
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await say("250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
                elif verb == "AUTH":
                    await say(self.auth_reply)
                elif verb == "MAIL":
                    await say(self.mail_reply)
                elif verb == "RCPT":
                    await say("250 ok")
                elif verb == "DATA":
                    await say("354 go on")
                    while (await reader.readline()).rstrip(b"\r\n") != b".":
                        pass
                    await say("250 queued")
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("250 ok")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def smtp_settings(port: int, timeout: float = 5.0) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, username="hub",
                        password=f"pw-{SECRET}", timeout_seconds=timeout)


async def send_one(settings: SmtpSettings) -> Any:
    return await Mailer(settings).send(to=["ops@example.com"], subject="s", text="t",
                                       html="<p>t</p>", message_id="<conformance@crmhub>")


@pytest.mark.parametrize(("server", "expect"), [
    ({}, OK),
    ({"mail_reply": "451 4.3.0 try again later"}, transient()),
    ({"mail_reply": "550 5.7.1 relaying denied"}, PERMANENT),
    ({"auth_reply": "535 5.7.8 authentication failed"}, PAUSE),
], ids=["250", "451", "550", "535-auth"])
async def test_smtp_reply_codes_are_classified(server: dict[str, Any], expect: Expect) -> None:
    async with FakeSmtp(**server) as fake:
        check(await outcome_of(send_one(smtp_settings(fake.port))), expect, (SECRET,))


async def test_smtp_silent_server_times_out_and_refused_connection_waits() -> None:
    async with FakeSmtp(silent=True) as fake:
        started = time.monotonic()
        outcome = await outcome_of(send_one(smtp_settings(fake.port, timeout=1.0)))
        assert time.monotonic() - started < 10.0
    check(outcome, transient(), (SECRET,))
    assert "timed out" in str(outcome), outcome
    refused = await outcome_of(send_one(smtp_settings(free_port())))
    check(refused, transient(), (SECRET,))
    assert "unreachable" in str(refused), refused


# -- FileDrop: the same questions of a folder ------------------------------------------------
async def test_filedrop_outcomes_a_folder_can_give(tmp_path: Path) -> None:
    drop_folder = tmp_path / "drop"
    assert not any(isinstance(getattr(FileDropSettings(), name), SecretStr)
                   for name in FileDropSettings.model_fields), "secrets: add them to the checks"
    drop = FileDrop(FileDropSettings(directory=drop_folder))
    check(await outcome_of(drop.write("customer", "C-1", {"id": "C-1"})), OK, ())
    # a name the file system refuses will never be written: dead-letter it
    check(await outcome_of(drop.write("customer", "C" * 300, {})), PERMANENT, ())
    # the folder is not there (a file where it should be: an unmounted share): wait for it
    blocked = drop_folder.parent / "not-a-folder"
    blocked.write_text("x")
    outcome = await outcome_of(FileDrop(FileDropSettings(directory=blocked)).write(
        "customer", "C-1", {}))
    check(outcome, transient(), ())
