"""Every method of asyncio.AbstractEventLoop (on the running Python) exists on the loop and is not a
``raise NotImplementedError`` stub, nor reaches one of BaseEventLoop's stub hooks; the methods that
need those hooks also work when called for real.

The pipe and subprocess methods are being implemented on other branches: on levent they are strict
xfails here, so that the suite fails (XPASS) as soon as they work and the marks must go.
"""
import ast
import asyncio
import inspect
import os
import sys
import textwrap

import pytest

from .util import run

PUBLIC_METHODS = sorted(name for name in dir(asyncio.AbstractEventLoop)
                        if not name.startswith("_") and callable(getattr(asyncio.AbstractEventLoop, name)))

def is_stub(func):
    """True if ``func``'s body (after its docstring) is only ``raise NotImplementedError[...]``."""
    func = inspect.unwrap(getattr(func, "__func__", func))
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return False        # compiled (levent's Cython methods): not a stub
    node = ast.parse(source).body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise):
        return False
    exc = body[0].exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def owner(cls, name):
    """The class of ``cls``'s MRO that defines ``name``."""
    return next(c for c in cls.__mro__ if name in c.__dict__)


def reached(cls, name, _seen=()):
    """True if ``name`` may be called on a ``cls`` loop: it is public (or a dunder), or a method
    ``cls`` resolves to Python source calls ``self.name(`` and is reached itself. (levent's compiled
    methods have no source: what they call is checked by the tests that run them.)"""
    if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
        return True
    for attr in dir(cls):
        if attr in _seen or attr == name:
            continue
        func = inspect.getattr_static(cls, attr)
        func = getattr(func, "__func__", func)
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            continue
        if f"self.{name}(" in source and reached(cls, attr, _seen + (name,)):
            return True
    return False


def stub_hooks(cls):
    """Names of every attribute of ``cls`` that resolves to a NotImplementedError stub."""
    return sorted(name for name in dir(cls)
                  if callable(inspect.getattr_static(cls, name)) and is_stub(inspect.getattr_static(cls, name)))


def test_stub_detection_works():
    # The checks below must be able to fail: AbstractEventLoop's own methods are all stubs, and
    # BaseEventLoop's public methods reach its hooks.
    assert is_stub(asyncio.AbstractEventLoop.add_reader)
    assert is_stub(asyncio.AbstractEventLoop.create_task)
    assert not is_stub(asyncio.BaseEventLoop.create_task)
    assert "_make_subprocess_transport" in stub_hooks(asyncio.BaseEventLoop)
    assert reached(asyncio.BaseEventLoop, "_make_subprocess_transport")
    assert reached(asyncio.BaseEventLoop, "_process_events")      # through run_forever()
    assert not reached(asyncio.BaseEventLoop, "_no_such_hook")


@pytest.mark.parametrize("name", PUBLIC_METHODS)
def test_public_method_is_implemented(loop, name):
    method = getattr(loop, name, None)
    assert callable(method), f"{type(loop).__name__} has no method {name}()"
    defined_by = owner(type(loop), name)
    assert defined_by is not asyncio.AbstractEventLoop, f"{name}() is AbstractEventLoop's stub"
    assert not is_stub(inspect.getattr_static(type(loop), name)), f"{name}() only raises NotImplementedError"


@pytest.mark.parametrize("hook", stub_hooks(asyncio.BaseEventLoop))
def test_base_event_loop_hook_is_implemented(loop, hook):
    cls = type(loop)
    if not is_stub(inspect.getattr_static(cls, hook)):
        return
    # A stub is fine only where nothing calls it (levent replaces _run_once, which polls with
    # _process_events, and call_soon_threadsafe, which wakes the selector with _write_to_self).
    assert not reached(cls, hook), f"{hook}() only raises NotImplementedError, and the loop calls it"


# -- the pipe and subprocess methods, called for real --------------------------------------

def test_connect_read_pipe(loop):
    async def main():
        rfd, wfd = os.pipe()
        received = loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(self, data):
                received.set_result(data)

        pipe = os.fdopen(rfd, "rb", 0)
        try:
            tr, _ = await loop.connect_read_pipe(Reader, pipe)
        except BaseException:
            pipe.close()
            os.close(wfd)
            raise
        os.write(wfd, b"through the pipe")
        os.close(wfd)
        try:
            return await received
        finally:
            tr.close()
            await asyncio.sleep(0)

    assert run(loop, main()) == b"through the pipe"


def test_connect_write_pipe(loop):
    async def main():
        rfd, wfd = os.pipe()
        pipe = os.fdopen(wfd, "wb", 0)
        try:
            tr, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        except BaseException:
            os.close(rfd)
            pipe.close()
            raise
        tr.write(b"into the pipe")
        tr.close()
        await asyncio.sleep(0.05)
        try:
            return os.read(rfd, 100)
        finally:
            os.close(rfd)

    assert run(loop, main()) == b"into the pipe"


def test_subprocess_exec(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.strip(), proc.returncode

    asyncio.set_event_loop(loop)    # 3.9-3.11's child watchers look for the current loop
    try:
        assert run(loop, main()) == (b"child", 0)
    finally:
        asyncio.set_event_loop(None)


def test_subprocess_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo shell", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.strip(), proc.returncode

    asyncio.set_event_loop(loop)
    try:
        assert run(loop, main()) == (b"shell", 0)
    finally:
        asyncio.set_event_loop(None)


# -- TLS (native TLS transports are being worked on elsewhere: these hold whichever way it is done) --

@pytest.fixture
def tls_contexts(certs):
    import ssl
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.server_cert, certs.server_key)
    client = ssl.create_default_context(cafile=certs.ca)
    return server, client


class Upper(asyncio.Protocol):
    instances = []

    def connection_made(self, transport):
        self.transport = transport
        self.instances.append(self)

    def data_received(self, data):
        self.transport.write(data.upper())


def test_create_server_and_connection_with_tls(loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def main():
        server = await loop.create_server(Upper, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        writer.write(b"secret")
        data = await reader.readexactly(6)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
        for proto in Upper.instances:
            proto.transport.close()     # before 3.12, closing the server leaves its connections open
        Upper.instances.clear()
        server.close()
        await server.wait_closed()
        return data, version.startswith("TLS")

    assert run(loop, main()) == (b"SECRET", True)


def test_start_tls(loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts
    accepted = []

    class StartTLSServer(asyncio.Protocol):
        """Answers OK to STARTTLS (reading paused, so the handshake waits in the kernel), upgrades,
        then answers in upper case."""

        def connection_made(self, transport):
            self.transport = transport
            accepted.append(self)

        def data_received(self, data):
            if data == b"STARTTLS":
                self.transport.pause_reading()
                self.transport.write(b"OK")
                self.upgraded = loop.create_task(
                    loop.start_tls(self.transport, self, server_ctx, server_side=True))
            else:
                # Data may come in before start_tls() returned the TLS transport.
                loop.create_task(self.reply(data.upper()))

        async def reply(self, data):
            (await self.upgraded).write(data)

    class Client(asyncio.Protocol):
        def __init__(self):
            self.replies = asyncio.Queue()

        def data_received(self, data):
            self.replies.put_nowait(data)

    async def main():
        server = await loop.create_server(StartTLSServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(Client, "127.0.0.1", port)
        tr.write(b"STARTTLS")
        ok = await proto.replies.get()
        tls_tr = await loop.start_tls(tr, proto, client_ctx, server_hostname="localhost")
        tls_tr.write(b"upgraded")
        reply = await proto.replies.get()
        subject = dict(x[0] for x in tls_tr.get_extra_info("peercert")["subject"])
        tls_tr.close()
        (await accepted[0].upgraded).close()
        server.close()
        await server.wait_closed()
        return ok, reply, subject["commonName"]

    assert run(loop, main()) == (b"OK", b"UPGRADED", "localhost")
