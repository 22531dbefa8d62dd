"""Hypothesis against the voice gateway: whatever a client sends first, the documented close
code, and the server keeps serving the next client."""

from __future__ import annotations

import json
from typing import Any

import trio_websocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from discore_voice._core.voice.payloads import HeartbeatAck, Ready

from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    Closed,
    connect_voice,
    identify,
    voice_server,
)

CLIENT_JSON_OPS = {0, 1, 3, 5, 7, 23, 31}
CLIENT_BINARY_OPS = {26, 28}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def expected_close(message: str | bytes) -> set[int | None]:
    """The close codes the simulator documents for a first message, written from its docstring
    independently of its code; ``None`` means the connection may stay open."""
    if isinstance(message, bytes):
        if not message:
            return {4002}
        return {4003} if message[0] in CLIENT_BINARY_OPS else {4001}
    try:
        payload = json.loads(message)
    except ValueError:
        return {4002}
    if not isinstance(payload, dict):
        return {4002}
    op = payload.get("op")
    if not isinstance(op, int) or isinstance(op, bool):
        return {4002}
    if op not in CLIENT_JSON_OPS:
        return {4001}
    if op == 3:
        return {None, 4002}  # a heartbeat is fine before identifying
    # A malformed d, an identify/resume for no session, or anything else before identifying.
    return {4002, 4003, 4004, 4006}


messages = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"op": st.integers(-5, 40) | json_values, "d": json_values}).map(
        json.dumps
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=st.lists(messages, min_size=1, max_size=3))
@example(first=['{"op":3,"":null}'])  # a heartbeat without d: 4002, not an ACK
@example(first=['{"op":3,"d":{"t":1}}', "[]"])  # fine, then undecodable
async def test_garbage_gets_a_documented_close_and_the_server_survives(first: list[Any]) -> None:
    async with voice_server() as (server, authority):
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            allowed: set[int | None] = set()
            code: int | None
            try:
                for message in first:
                    expected = expected_close(message)
                    allowed |= expected
                    await client.send_raw(message)
                    if None not in expected:
                        break
                # Still open, or closing: a heartbeat round trip tells which.
                await client.send_raw('{"op": 3, "d": {"t": 1}}')
                while not isinstance((await client.recv())[1], HeartbeatAck):
                    pass
                code = None
            except Closed as closed:
                code = closed.code
            except trio_websocket.ConnectionClosed as closed:
                code = closed.reason.code if closed.reason else None
            assert code in allowed
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(authority.issue(GUILD, CHANNEL, BOT)))
            await client.expect(Ready)
