"""A real asyncio subprocess program, unchanged, on levent.run(): producer | filter | consumer, three
children whose pipes the parent joins with asyncio streams, moving 16 MiB with a checksum at the end.
It runs on stdlib asyncio too, so a failure that is the test's own shows on both."""
import asyncio
import hashlib
import sys

import pytest

import levent

RUNNERS = {"asyncio": asyncio.run, "levent": levent.run}
MIB = 16

PRODUCER = ("import sys\n"
            "block = bytes(range(256)) * 4096\n"
            "for _ in range(int(sys.argv[1])): sys.stdout.buffer.write(block)\n")
# Rotates every byte by one, in odd-sized chunks.
FILTER = ("import sys\n"
          "table = bytes((b + 1) % 256 for b in range(256))\n"
          "while True:\n"
          "    data = sys.stdin.buffer.read1(12345)\n"
          "    if not data: break\n"
          "    sys.stdout.buffer.write(data.translate(table))\n")
CONSUMER = ("import hashlib, sys\n"
            "h = hashlib.sha256(); n = 0\n"
            "while True:\n"
            "    data = sys.stdin.buffer.read1(65536)\n"
            "    if not data: break\n"
            "    h.update(data); n += len(data)\n"
            "print(n, h.hexdigest())\n")


async def pump(reader, writer):
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def pipeline(mib):
    pipe = asyncio.subprocess.PIPE
    producer = await asyncio.create_subprocess_exec(sys.executable, "-c", PRODUCER, str(mib), stdout=pipe)
    filt = await asyncio.create_subprocess_exec(sys.executable, "-c", FILTER, stdin=pipe, stdout=pipe)
    consumer = await asyncio.create_subprocess_exec(sys.executable, "-c", CONSUMER, stdin=pipe, stdout=pipe)
    _, _, out = await asyncio.gather(pump(producer.stdout, filt.stdin),
                                     pump(filt.stdout, consumer.stdin),
                                     consumer.stdout.read())
    codes = [await p.wait() for p in (producer, filt, consumer)]
    size, digest = out.split()
    return int(size), digest.decode(), codes


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_pipeline(runner):
    table = bytes((b + 1) % 256 for b in range(256))
    block = (bytes(range(256)) * 4096).translate(table)
    want = hashlib.sha256()
    for _ in range(MIB):
        want.update(block)
    assert RUNNERS[runner](asyncio.wait_for(pipeline(MIB), 60)) == (MIB << 20, want.hexdigest(), [0, 0, 0])
