"""The Matrix client against a real Synapse: idempotent sends, /sync cursors, re-login; and
classify() on Matrix's error answers."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from connectors.matrix.client import MatrixClient, MatrixFault, classify
from connectors.matrix.settings import MatrixSettings
from crmhub.errors import PermanentError, TransientError
from tests.connectors.oa.conftest import Room


async def test_the_same_txn_id_sends_one_message(room: Room) -> None:
    async with MatrixClient(room.settings()) as client:
        first = await client.send(room.room_id, "approval-O-1", {"msgtype": "m.text",
                                                                 "body": "hello"})
        again = await client.send(room.room_id, "approval-O-1", {"msgtype": "m.text",
                                                                 "body": "hello"})
        other = await client.send(room.room_id, "approval-O-2", {"msgtype": "m.text",
                                                                 "body": "hello"})
    assert first == again != other
    assert [m["event_id"] for m in room.messages()] == [first, other]


async def test_sync_from_a_cursor_returns_only_what_is_new(room: Room) -> None:
    async with MatrixClient(room.settings()) as client:
        start = await client.sync(room.room_id, None)
        said = room.say("alice", "APPROVE")
        batch = await client.sync(room.room_id, start.next_batch)
        assert [e["event_id"] for e in batch.events if e["type"] == "m.room.message"] == [said]
        empty = await client.sync(room.room_id, batch.next_batch)
        assert [e for e in empty.events if e["type"] == "m.room.message"] == []


async def test_a_refused_token_means_one_new_login(room: Room) -> None:
    async with MatrixClient(room.settings()) as client:
        await client.sync(room.room_id, None)
        old = client.token
        await client.call("logout", "POST", "/_matrix/client/v3/logout", {})  # token gone
        await client.send(room.room_id, "after-logout", {"msgtype": "m.text", "body": "hi"})
        assert client.logins == 2 and client.token != old


async def test_a_wrong_password_pauses_and_never_shows_the_password(room: Room) -> None:
    settings = room.settings().model_copy(update={"password": SecretStr("wrong-password")})
    async with MatrixClient(settings) as client:
        with pytest.raises(TransientError, match="M_FORBIDDEN.*MATRIX_PASSWORD") as caught:
            await client.login()
    assert "wrong-password" not in str(caught.value)


async def test_429_is_transient_with_the_servers_retry_after() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"errcode": "M_LIMIT_EXCEEDED", "error": "Too many",
                                         "retry_after_ms": 1500})

    settings = MatrixSettings(url="http://matrix.invalid", password="secret-password")
    client = MatrixClient(settings, transport=httpx.MockTransport(limited))
    client.token = "syt_known"
    try:
        with pytest.raises(TransientError) as caught:
            await client.send("!r:hub.local", "t1", {"body": "x"})
    finally:
        await client.aclose()
    assert caught.value.retry_after == 1.5 and caught.value.system == "matrix"


def test_classify_matrix_answers() -> None:
    assert isinstance(classify(MatrixFault("send", 502)), TransientError)
    assert isinstance(classify(httpx.ConnectError("refused")), TransientError)
    assert isinstance(classify(MatrixFault("send", 403, "M_FORBIDDEN", "not in room")),
                      PermanentError)
    assert isinstance(classify(MatrixFault("sync", 401, "M_UNKNOWN_TOKEN")), TransientError)
    limited = classify(MatrixFault("send", 429, "M_LIMIT_EXCEEDED"))
    assert isinstance(limited, TransientError) and limited.retry_after == 5.0
