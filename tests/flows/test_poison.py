"""Bad input never crashes a consumer or stalls a partition: it is dead-lettered with a reason."""

from __future__ import annotations

import json
import re
import uuid

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from crmhub import topics
from crmhub.errors import DecodeError
from schemas.canonical import Customer
from schemas.envelope import decode_event
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


garbage = st.one_of(
    st.binary(max_size=300),  # not JSON at all (or JSON by accident: still not an envelope)
    json_values.map(lambda v: json.dumps(v).encode()),  # JSON, not an envelope
    st.integers().filter(lambda v: v != 1).map(lambda v: envelope_with(schema_version=v)),
    # an invalid type: anything but "<word>.<word>" (hypothesis found "a.a" is a valid one)
    st.text(max_size=20).filter(lambda v: not re.fullmatch(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*",
                                                            v))
    .map(lambda v: envelope_with(type=v or "Bad Type")),
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


def garbage_samples(count: int) -> list[bytes]:
    """Draw garbage with hypothesis in a plain (sync) run, for the broker test below."""
    samples: list[bytes] = []

    @given(raw=garbage)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None)
    def collect(raw: bytes) -> None:
        samples.append(raw)

    collect()
    return samples


async def test_poison_input_never_stalls_a_partition(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book)])
    batch = garbage_samples(40)
    good = [customer_event(f"ok-{n}") for n in range(3)]
    # Everything on one key, so garbage sits between good messages in the same partition.
    third = len(batch) // 3
    mixed = [*batch[:third], good[0].to_bytes(), *batch[third:2 * third], good[1].to_bytes(),
             *batch[2 * third:], good[2].to_bytes()]
    await publish(hub.bootstrap_servers, topics.CUSTOMER, *mixed, key=b"one-partition")
    await eventually(lambda: [f"customer:{e.entity_id}" for e in good] == book.created,
                     timeout=20, message="good messages between the garbage processed")
    letters = await eventually(lambda: len(hub.store.list_dead_letters(limit=1000)) == len(batch)
                               and hub.store.list_dead_letters(limit=1000),
                               message=f"every garbage dead-lettered: {batch!r}")
    assert all(letter.error_class == "DecodeError" and letter.error_message for letter in letters)
    assert [letter.value for letter in letters] == batch  # in order, byte for byte
