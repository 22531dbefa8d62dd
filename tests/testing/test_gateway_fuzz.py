"""Hypothesis against the gateway: whatever a client sends, the documented close code, and the
simulator keeps serving the next client."""

from __future__ import annotations

import json
from typing import Any

import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discore_voice.testing import open_local_discord

from .conftest import Closed, connect_gateway

CLIENT_OPS = {1, 2, 3, 4, 6, 8, 31, 43}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def expected_close(message: str | bytes) -> int | None:
    """The close code Discord documents for a first message, or None when it is acceptable.

    Written from the docs, independently of the simulator's code.
    """
    raw = message.encode() if isinstance(message, str) else message
    if len(raw) > 4096:
        return 4002
    try:
        payload = json.loads(raw)
    except ValueError:
        return 4002
    if not isinstance(payload, dict):
        return 4002
    op = payload.get("op")
    if not isinstance(op, int) or isinstance(op, bool) or op not in CLIENT_OPS:
        return 4001
    return None


messages = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"op": st.integers(-5, 60) | json_values, "d": json_values}).map(
        json.dumps
    ),
    st.integers(4097, 6000).map(lambda n: json.dumps({"op": 1, "d": None, "pad": "x" * n})),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=messages)
async def test_garbage_gets_the_documented_close_and_the_server_stays_up(
    message: str | bytes,
) -> None:
    code = expected_close(message)
    if code is None:
        # A well-formed payload with a client opcode: its handling is tested elsewhere.
        return
    async with open_local_discord() as discord:
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.hello()
            await gw.send(message)
            assert await gw.close_code() == code
        async with connect_gateway(discord.gateway_url) as gw:
            ready = await gw.identify(discord.bot.token)
            assert ready["d"]["user"]["id"] == str(discord.bot.user_id)


@settings(max_examples=60, deadline=None)
@given(data=json_values)
async def test_identify_with_random_data_never_crashes(data: Any) -> None:
    async with open_local_discord() as discord:
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.hello()
            await gw.send({"op": 2, "d": data})
            code = await gw.close_code()
            assert code in {4001, 4004, 4010, 4013, 4014}
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
        assert len(discord.sessions) == 1


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(
        st.fixed_dictionaries({"op": st.sampled_from(sorted(CLIENT_OPS)), "d": json_values}),
        min_size=1,
        max_size=5,
    )
)
async def test_random_payloads_after_identify(payloads: list[dict[str, Any]]) -> None:
    async with open_local_discord() as discord:
        guild = discord.add_guild()
        guild.add_voice_channel()
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            code: int | None = None
            try:
                for payload in payloads:
                    await gw.send(payload)
                # A heartbeat last: either it is acknowledged, or the connection was closed
                # with a code that names the client's fault. Its ACK is the last of them all: an
                # earlier heartbeat's ACK can arrive before the server reads what followed it.
                await gw.send({"op": 1, "d": None})
                for _ in range(1 + sum(payload["op"] == 1 for payload in payloads)):
                    await gw.recv_op(11)
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else None
            except Closed as closed:
                code = closed.code
            if code is None:
                assert all(p["op"] not in (2, 6) for p in payloads)
            else:
                assert code in {4001, 4005}, code
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
