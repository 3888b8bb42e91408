"""TLS to the OA systems: mail over STARTTLS to a real aiosmtpd and tasks over HTTPS to a
real Radicale, both with certificates of a test CA; and the policy that refuses a plain
connection to a host that is not loopback unless the operator allows it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.caldav.client import TaskList
from connectors.caldav.settings import CaldavSettings
from connectors.smtp.client import Mailer
from connectors.smtp.settings import SmtpSettings
from crmhub.dev.sandbox.oa import MailServer, TaskServer
from crmhub.errors import TransientError
from schemas.canonical import Task
from tests.connectors.oa.conftest import mails_to, start_or_fail
from tests.pki import TestCa


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("oa-pki"))


@pytest.fixture(scope="module")
def tls_mail_server(ca: TestCa) -> Iterator[MailServer]:
    issued = ca.server("mail")
    server = start_or_fail("aiosmtpd (STARTTLS)", MailServer(tls=(issued.cert, issued.key)).start)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_task_server(ca: TestCa) -> Iterator[TaskServer]:
    issued = ca.server("radicale")
    server = start_or_fail("Radicale (HTTPS)", TaskServer(tls=(issued.cert, issued.key)).start)
    yield server
    server.stop()


def mail_settings(server: MailServer, ca_file: Path, **extra: object) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=server.port or 0, starttls=True,
                        ca_file=ca_file, sender="crmhub <crmhub@example.com>", **extra)


async def send(mailer: Mailer, to: str) -> str:
    return await mailer.send(to=[to], subject="TLS", text="over TLS", html="<p>over TLS</p>",
                             message_id=f"<{uuid.uuid4()}@crmhub.test>")


async def test_mail_goes_out_over_starttls_checked_against_the_ca(
        tls_mail_server: MailServer, ca: TestCa, tmp_path: Path) -> None:
    to = f"finance-{uuid.uuid4().hex[:8]}@example.com"
    await send(Mailer(mail_settings(tls_mail_server, ca.ca_file)), to)
    assert len(mails_to(tls_mail_server, to)) == 1
    # The server requires STARTTLS: a plain session is refused, nothing is delivered.
    plain = f"plain-{uuid.uuid4().hex[:8]}@example.com"
    with pytest.raises(Exception, match="STARTTLS|530"):
        await send(Mailer(SmtpSettings(host="127.0.0.1", port=tls_mail_server.port or 0)),
                   plain)
    other = TestCa(tmp_path / "other", "somebody else's CA")
    with pytest.raises(TransientError, match="does not verify.*SMTP_CA_FILE"):
        await send(Mailer(mail_settings(tls_mail_server, other.ca_file)), plain)
    assert mails_to(tls_mail_server, plain) == []


async def test_tasks_go_over_https_checked_against_the_ca(
        tls_task_server: TaskServer, ca: TestCa, tmp_path: Path) -> None:
    assert tls_task_server.url.startswith("https://")
    uid = f"tls-{uuid.uuid4().hex[:8]}"
    tasks = TaskList(CaldavSettings(url=tls_task_server.url, username=tls_task_server.user,
                                    password=tls_task_server.password, calendar="tls-tasks",
                                    ca_file=ca.ca_file))
    try:
        await tasks.upsert(Task(id=uid, title="Call about invoice INV-1"))
        found = await tasks.get(uid)
        assert found is not None and found.title == "Call about invoice INV-1"
    finally:
        await tasks.aclose()
    other = TestCa(tmp_path / "other", "somebody else's CA")
    stranger = TaskList(CaldavSettings(url=tls_task_server.url, username=tls_task_server.user,
                                       password=tls_task_server.password,
                                       calendar="tls-tasks", ca_file=other.ca_file))
    try:
        with pytest.raises(TransientError, match="CALDAV_CA_FILE"):
            await stranger.get(uid)
    finally:
        await stranger.aclose()


# -- the policy: remote hosts need TLS unless explicitly allowed ------------------------------
def test_smtp_to_a_remote_host_needs_tls() -> None:
    with pytest.raises(ValidationError, match="SMTP_STARTTLS=true.*SMTP_ALLOW_PLAINTEXT"):
        SmtpSettings(host="mail.example.com", port=25)
    assert SmtpSettings(host="mail.example.com", port=587, starttls=True).tls
    assert SmtpSettings(host="mail.example.com", port=465, implicit_tls=True).tls
    assert not SmtpSettings(host="relay.internal", allow_plaintext=True).tls
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.53"):
        assert not SmtpSettings(host=loopback).tls  # the sandboxes, a local relay
    with pytest.raises(ValidationError, match="exclude each other"):
        SmtpSettings(host="mail.example.com", starttls=True, implicit_tls=True)


def test_caldav_to_a_remote_host_needs_https(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="https:// CALDAV_URL.*CALDAV_ALLOW_PLAINTEXT"):
        CaldavSettings(url="http://dav.example.com/")
    assert CaldavSettings(url="https://dav.example.com/").url.startswith("https")
    CaldavSettings(url="http://dav.internal:5232/", allow_plaintext=True)
    CaldavSettings(url="http://127.0.0.1:5232/")
    with pytest.raises(ValidationError, match="is not a file"):
        CaldavSettings(url="https://dav.example.com/", ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="must be an http"):
        CaldavSettings(url="dav.example.com")
    assert CaldavSettings(url="https://dav.example.com/", ca_file="").ca_file is None
