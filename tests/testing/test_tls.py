"""wss:// and https:// with the simulator's throwaway CA, verification on."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pytest
import trio

from discore_voice import UsageError
from discore_voice.testing import open_local_discord

from .conftest import ConnectGateway
from .test_rest import Http


async def test_wss_and_https_verify_against_the_generated_ca(connect: ConnectGateway) -> None:
    async with open_local_discord(tls=True) as discord:
        assert discord.gateway_url.startswith("wss://127.0.0.1:")
        assert discord.api_url.startswith("https://127.0.0.1:")
        ca_path = discord.ca_pem_path
        assert ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
        async with connect(discord.gateway_url, ssl_context=discord.client_ssl_context()) as gw:
            ready = await gw.identify(discord.bot.token)
            assert ready["d"]["resume_gateway_url"].startswith("wss://")
        # The same CA through a plain cafile, as SSL_CERT_FILE users would load it.
        parts = urlsplit(discord.api_url)
        assert parts.port is not None
        tcp = await trio.open_tcp_stream("127.0.0.1", parts.port)
        context = ssl.create_default_context(cafile=str(ca_path))
        stream = trio.SSLStream(tcp, context, server_hostname="localhost")
        async with stream:
            status, _, me = await Http(stream).request(
                "GET", "/api/v10/users/@me", {"Authorization": f"Bot {discord.bot.token}"}
            )
        assert status == 200 and me["id"] == str(discord.bot.user_id)
    assert not ca_path.exists()


async def test_a_client_without_the_ca_is_refused_and_the_server_survives(
    connect: ConnectGateway,
) -> None:
    async with open_local_discord(tls=True) as discord:
        parts = urlsplit(discord.gateway_url)
        assert parts.port is not None
        tcp = await trio.open_tcp_stream("127.0.0.1", parts.port)
        stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname="127.0.0.1")
        with pytest.raises(trio.BrokenResourceError) as caught:
            with trio.fail_after(5):
                await stream.do_handshake()
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        await trio.aclose_forcefully(stream)
        async with connect(discord.gateway_url, ssl_context=discord.client_ssl_context()) as gw:
            await gw.identify(discord.bot.token)


async def test_plain_simulator_has_no_ca() -> None:
    async with open_local_discord() as discord:
        assert not discord.tls
        with pytest.raises(UsageError):
            _ = discord.ca_pem_path
        with pytest.raises(UsageError):
            discord.client_ssl_context()
