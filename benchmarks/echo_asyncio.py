#!/usr/bin/env python3
"""asyncio Protocol echo server, the asyncio contender of benchmarks/streams.py.

    python benchmarks/echo_asyncio.py --port PORT

Listens on 127.0.0.1:PORT with asyncio's default event loop, prints "ready" on stdout once
listening, and exits with status 0 on SIGINT or SIGTERM. Each connection is a Protocol whose
data_received() hands the bytes straight to transport.write(): the shortest echo asyncio has
(no streams, no coroutines per connection). asyncio's transports set TCP_NODELAY and read up to
256 KiB per recv(); write() sends at once when nothing is queued and buffers the rest.
"""
import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024, reuse_address=True)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        await stop
    finally:
        server.close()
        if hasattr(server, "abort_clients"):  # 3.13+; before, open transports go with the loop
            server.abort_clients()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
