"""Bad input never crashes a consumer or stalls a partition: it is dead-lettered with a reason."""

from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmhub import topics
from crmhub.errors import DecodeError
from crmhub.hub import Hub
from schemas.canonical import Customer
from schemas.envelope import decode_event
from schemas.state import DeadLetter
from tests.conftest import HubFactory, eventually, publish
from tests.flows.support import Ledgerbook, customer_event, customer_flow

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


def envelope_with(**changes: object) -> bytes:
    body = json.loads(customer_event(f"c-{uuid.uuid4().hex[:6]}").to_bytes())
    body.update(changes)
    return json.dumps(body).encode()


_hubs: dict[int, Hub] = {}

garbage = st.one_of(
    st.binary(max_size=300),  # not JSON at all (or JSON by accident: still not an envelope)
    json_values.map(lambda v: json.dumps(v).encode()),  # JSON, not an envelope
    st.integers().filter(lambda v: v != 1).map(lambda v: envelope_with(schema_version=v)),
    st.text(max_size=20).map(lambda v: envelope_with(type=v or "Bad Type")),
    json_values.map(lambda v: envelope_with(data=v)),  # envelope, data not a Customer
    st.just(b"\xff\xfe\x00 not utf-8"),
)


@given(raw=garbage)
@settings(max_examples=400, deadline=None)
def test_decoder_rejects_garbage_with_a_decode_error_only(raw: bytes) -> None:
    try:
        decode_event(raw, Customer)
    except DecodeError as exc:
        assert str(exc)  # a reason, never an empty message
    else:
        raise AssertionError(f"garbage decoded: {raw!r}")


def test_huge_body_is_rejected_before_parsing() -> None:
    raw = envelope_with(padding="x" * 2_000_000)
    try:
        decode_event(raw, Customer, max_bytes=1_048_576)
    except DecodeError as exc:
        assert "exceeds the 1048576-byte limit" in str(exc)
    else:
        raise AssertionError("huge body accepted")


@given(batch=st.lists(garbage, min_size=5, max_size=15))
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_poison_input_never_stalls_a_partition(make_hub: HubFactory, batch: list[bytes]
                                                     ) -> None:
    # One hub serves every example of one test run (the fixture lives that long).
    if id(make_hub) not in _hubs:
        _hubs[id(make_hub)] = await make_hub([customer_flow(Ledgerbook())])
    hub = _hubs[id(make_hub)]
    book = hub.steps[0].sink
    before = len(hub.store.list_dead_letters(limit=10_000))
    good = [customer_event(f"ok-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    # Everything on one key, so garbage sits between good messages in the same partition.
    mixed = [good[0].to_bytes(), *batch[: len(batch) // 2], good[1].to_bytes(),
             *batch[len(batch) // 2:], good[2].to_bytes()]
    await publish(hub.bootstrap_servers, topics.CUSTOMER, *mixed, key=b"one-partition")
    await eventually(lambda: all(f"customer:{e.entity_id}" in book.created for e in good),
                     timeout=20, message="good messages after the garbage processed")

    def new_letters() -> list[DeadLetter] | None:
        rows = hub.store.list_dead_letters(limit=10_000)
        return rows[before:] if len(rows) - before == len(batch) else None

    letters = await eventually(new_letters, message="every garbage dead-lettered")
    assert all(letter.error_class == "DecodeError" and letter.error_message for letter in letters)
    assert sorted(letter.value for letter in letters) == sorted(batch)
