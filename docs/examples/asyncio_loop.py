"""levent's asyncio loop: asyncio code, unchanged, on libevent."""
import asyncio

import levent


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


async def main() -> bytes:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, levent.EventLoop)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"echo me\n")
    reply = await asyncio.wait_for(reader.readline(), 5.0)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return reply


reply = levent.run(main())      # asyncio.run(main()) on a levent.EventLoop
print(reply)
assert reply == b"echo me\n"
