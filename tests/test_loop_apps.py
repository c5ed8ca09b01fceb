"""Real asyncio applications, unchanged, on levent.run(): an asyncio-streams chat server with 200
clients, and aiohttp's server and client exchanging 10,000 requests (and 2,000 over HTTPS). Each runs on stdlib asyncio too,
so a failure that is the test's own shows on both."""
import asyncio
import hashlib
import ssl
import sys

import pytest

import levent

RUNNERS = {"asyncio": asyncio.run, "levent": levent.run}


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    return RUNNERS[request.param]


async def chat(clients, rounds):
    """A chat server on asyncio streams: each line a client sends goes to every other client."""
    writers = set()

    async def serve(reader, writer):
        writers.add(writer)
        try:
            while line := await reader.readline():
                for other in list(writers):
                    if other is not writer:
                        other.write(line)
                await asyncio.gather(*(w.drain() for w in list(writers) if w is not writer),
                                     return_exceptions=True)
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connected = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    while len(writers) < clients:
        await asyncio.sleep(0.01)

    async def client(i, reader, writer):
        digest = hashlib.sha256()
        expected = (clients - 1) * rounds
        for r in range(rounds):
            writer.write(f"client {i} round {r}\n".encode())
        await writer.drain()
        lines = []
        for _ in range(expected):
            line = await reader.readline()
            lines.append(line)
        return sorted(lines)

    results = await asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(connected)))
    for _, writer in connected:
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return results


@pytest.mark.parametrize("clients,rounds", [(200, 3)])
def test_asyncio_streams_chat_with_200_clients(run, clients, rounds):
    results = run(asyncio.wait_for(chat(clients, rounds), 60))
    for i, lines in enumerate(results):
        expected = sorted(f"client {j} round {r}\n".encode()
                          for j in range(clients) if j != i for r in range(rounds))
        assert lines == expected


aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is a test dependency: pip install levent[test]")
from aiohttp import web  # noqa: E402


async def aiohttp_exchange(requests, concurrency, server_ssl=None, client_ssl=None):
    async def hello(request):
        body = await request.read()
        return web.Response(body=hashlib.sha256(body).hexdigest().encode())

    app = web.Application()
    app.router.add_post("/hash", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    scheme = "https" if server_ssl else "http"
    done = 0
    try:
        connector = aiohttp.TCPConnector(limit=concurrency, ssl=client_ssl if client_ssl else True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def worker(w):
                nonlocal done
                for i in range(w, requests, concurrency):
                    body = f"request {i}".encode() * (1 + i % 50)
                    async with session.post(f"{scheme}://127.0.0.1:{port}/hash", data=body) as resp:
                        assert resp.status == 200
                        assert await resp.read() == hashlib.sha256(body).hexdigest().encode()
                    done += 1

            await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        await runner.cleanup()
    return done


def test_aiohttp_server_and_client_exchange_10000_requests(run):
    assert run(asyncio.wait_for(aiohttp_exchange(10_000, 20), 120)) == 10_000


def test_aiohttp_over_https_with_a_self_signed_certificate(run, certs):
    # The certificate is made at test time (tests/conftest.py); the client trusts exactly it.
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(certs.self_cert, certs.self_key)
    client_ssl = ssl.create_default_context(cafile=certs.self_cert)
    assert run(asyncio.wait_for(aiohttp_exchange(2_000, 20, server_ssl, client_ssl), 120)) == 2_000


def test_aiohttp_https_client_refuses_an_untrusted_server(run, certs):
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(certs.self_cert, certs.self_key)
    client_ssl = ssl.create_default_context(cafile=certs.ca)     # not the CA of self_cert
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        run(asyncio.wait_for(aiohttp_exchange(1, 1, server_ssl, client_ssl), 60))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run() takes loop_factory from 3.12")
def test_asyncio_run_with_levent_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=levent.new_event_loop) is levent.EventLoop
