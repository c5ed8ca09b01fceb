"""The socket half of levent's asyncio loop: transports, servers, UNIX sockets and the sock_* methods.

These are the hooks asyncio's ``BaseEventLoop`` leaves to its subclasses (``_make_socket_transport``,
``_start_serving``...): with them, asyncio's own create_connection, create_server, Server,
connect_accepted_socket, start_tls and sendfile run on levent. The transports themselves are native
(``levent._transport``); the sock_* methods follow asyncio's selector loop: try the call first, and
watch the fd only when it would block.
"""
import errno
import functools
import io
import os
import socket
import sys
from asyncio import constants, exceptions, sslproto, trsock, unix_events
from asyncio.log import logger
from typing import TYPE_CHECKING, Type, Union

from levent import _sendfile
from levent._transport import SocketTransport
from levent._udp import DatagramTransport

if TYPE_CHECKING:
    from levent import _sslproto

try:
    import ssl
except ImportError:     # Python built without ssl
    ssl = None  # type: ignore[assignment]  # checked before any use (ssl is not None)

# The TLS protocol class of _make_ssl_transport/start_tls: both take asyncio's SSLProtocol arguments.
_TLSProtocol: Union[Type[sslproto.SSLProtocol], Type["_sslproto.TLSProtocol"]]
if sys.version_info >= (3, 11) and ssl is not None:
    # levent's own TLS protocol has 3.11+'s sslproto semantics; 3.9/3.10 keep their stdlib one.
    from levent import _sslproto
    _TLSProtocol = _sslproto.TLSProtocol
else:
    _TLSProtocol = sslproto.SSLProtocol

_HAS_IPv6 = hasattr(socket, 'AF_INET6')
# asyncio's selector loop, whose os.sendfile() path levent borrows where it has no native sendfile.
_SelectorLoop = unix_events._UnixSelectorEventLoop


def _check_socket(loop, sock):
    if isinstance(sock, _SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


try:
    from ssl import SSLSocket as _SSLSocket
except ImportError:     # Python built without ssl
    class _SSLSocket:  # type: ignore[no-redef]  # a stand-in no socket is an instance of
        pass


class SocketsMixin:
    """Socket methods of :class:`levent.loop.EventLoop`; not used on its own."""

    # -- transports and servers ---------------------------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False,
                            server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT, **kwargs):
        # TLS over a plain levent transport: levent's TLSProtocol (3.11+), else asyncio's SSLProtocol.
        # kwargs: what the running version's protocol also takes (ssl_shutdown_timeout on 3.11+).
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = _TLSProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                    ssl_handshake_timeout=ssl_handshake_timeout, **kwargs)
        SocketTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    # levent's TLSProtocol is in use. The condition of its import, spelled out: mypy (stubtest) then
    # knows start_tls is not defined here on 3.9/3.10.
    if sys.version_info >= (3, 11) and ssl is not None:
        async def start_tls(self, transport, protocol, sslcontext, *, server_side=False, server_hostname=None,
                            ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
            """Upgrade ``transport`` to TLS; returns the new transport ``protocol`` must use at once."""
            # asyncio's start_tls with levent's TLSProtocol in place of its SSLProtocol.
            if not isinstance(sslcontext, ssl.SSLContext):
                raise TypeError(f'sslcontext is expected to be an instance of ssl.SSLContext, '
                                f'got {sslcontext!r}')
            if not getattr(transport, '_start_tls_compatible', False):
                raise TypeError(f'transport {transport!r} is not supported by start_tls()')
            waiter = self.create_future()
            tls = _TLSProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                               ssl_handshake_timeout=ssl_handshake_timeout,
                               ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False)
            # Paused before the switch: no data may reach the TLS protocol before connection_made().
            transport.pause_reading()
            transport.set_protocol(tls)
            made = self.call_soon(tls.connection_made, transport)
            resumed = self.call_soon(transport.resume_reading)
            try:
                await waiter
            except BaseException:
                transport.close()
                made.cancel()
                resumed.cancel()
                raise
            return tls._app_transport

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                       *ssl_timeouts):
        # ssl_timeouts: the handshake (and on 3.11+ shutdown) timeouts asyncio's Server passes.
        self._add_reader(sock.fileno(), self._accept_connection, protocol_factory, sock, sslcontext,
                         server, backlog, *ssl_timeouts)

    def _accept_connection(self, protocol_factory, sock, sslcontext, server, backlog, *ssl_timeouts):
        # Runs when the listening socket is readable: accept up to backlog connections per wakeup,
        # as asyncio does (bpo-27906).
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise   # the watcher's handle reports it to the exception handler
                # Out of fds or memory: the socket stays readable, so stop watching it for a while
                # rather than spin, and say so.
                self.call_exception_handler({
                    'message': 'socket.accept() out of system resource',
                    'exception': exc,
                    'socket': trsock.TransportSocket(sock),
                })
                self._remove_reader(sock.fileno())
                self.call_later(constants.ACCEPT_RETRY_DELAY, self._start_serving, protocol_factory,
                                sock, sslcontext, server, backlog, *ssl_timeouts)
                return
            self.create_task(self._accept_connection2(protocol_factory, conn, {'peername': addr},
                                                      sslcontext, server, *ssl_timeouts))

    async def _accept_connection2(self, protocol_factory, conn, extra, sslcontext, server,
                                  ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT, *more_timeouts):
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if sslcontext:
                kwargs = {'ssl_shutdown_timeout': more_timeouts[0]} if more_timeouts else {}
                transport = self._make_ssl_transport(
                    conn, protocol, sslcontext, waiter=waiter, server_side=True, extra=extra,
                    server=server, ssl_handshake_timeout=ssl_handshake_timeout, **kwargs)
            else:
                transport = self._make_socket_transport(conn, protocol, waiter=waiter, extra=extra,
                                                        server=server)
            try:
                await waiter
            except BaseException:
                transport.close()
                waiter = None   # the exception it holds may keep the protocol alive (gh-109534)
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            if self._debug:
                context = {'message': 'Error on transport creation for incoming connection',
                           'exception': exc}
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.call_exception_handler(context)

    def _stop_serving(self, sock):
        # A UNIX server made with cleanup_socket (3.13) removes its path, if it is still its socket.
        path = None
        inode = self._unix_server_sockets.pop(sock, None)
        if inode is not None:
            path = sock.getsockname()
        self._remove_reader(sock.fileno())
        sock.close()
        if path is not None:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error('Unable to clean up listening UNIX socket %r: %r', path, err)

    # UNIX sockets: asyncio's own methods for the running version (path checks, stale socket removal,
    # cleanup_socket on 3.13); they only call loop methods defined here or in BaseEventLoop.
    create_unix_connection = unix_events._UnixSelectorEventLoop.create_unix_connection
    create_unix_server = unix_events._UnixSelectorEventLoop.create_unix_server

    # -- sock_* methods -----------------------------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receive up to ``n`` bytes from non-blocking socket ``sock``."""
        _check_socket(self, sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_read(sock, sock.recv, n)

    async def sock_recv_into(self, sock, buf):
        """Receive into writable buffer ``buf``; returns the byte count."""
        _check_socket(self, sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_read(sock, sock.recv_into, buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to ``bufsize`` bytes: ``(data, address)``."""
        _check_socket(self, sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_read(sock, sock.recvfrom, bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into ``buf``: ``(nbytes, address)``."""
        _check_socket(self, sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_read(sock, sock.recvfrom_into, buf, nbytes)

    def _sock_read(self, sock, method, *args):
        # The call would block: retry it each time the socket is readable, until it gives a result.
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, self._sock_retry, fut, method, args)
        fut.add_done_callback(functools.partial(self._sock_read_done, fd, handle=handle))
        return fut

    def _sock_retry(self, fut, method, args):
        if fut.done():
            return      # cancelled; the done callback removes the watcher
        try:
            result = method(*args)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def _sock_read_done(self, fd, fut, handle=None):
        # Unless another operation took the fd's watcher over since (its handle replaced ours).
        if handle is None or not handle.cancelled():
            self.remove_reader(fd)

    def _sock_write_done(self, fd, fut, handle=None):
        if handle is None or not handle.cancelled():
            self.remove_writer(fd)

    async def sock_sendall(self, sock, data):
        """Send all of ``data``; returns None once the kernel has it all."""
        _check_socket(self, sock)
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        view = memoryview(data).cast('B')
        if n == len(view):
            return
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, self._sock_sendall, fut, sock, view, [n])
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))
        return await fut

    def _sock_sendall(self, fut, sock, view, pos):
        if fut.done():
            return
        try:
            n = sock.send(view[pos[0]:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            return
        pos[0] += n
        if pos[0] == len(view):
            fut.set_result(None)

    async def sock_sendto(self, sock, data, address):
        """Send datagram ``data`` to ``address``; returns the bytes sent."""
        _check_socket(self, sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, self._sock_retry, fut, sock.sendto, (data, 0, address))
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))
        return await fut

    # -- sendfile -------------------------------------------------------------------------------------
    # asyncio's sock_sendfile() and sendfile() (argument checks, fallback to read + send) call these.

    async def _sock_sendfile_native(self, sock, file, offset, count):
        self._ensure_fd_no_transport(sock.fileno())
        return await self._sendfile_to(sock, file, offset, count, None)

    async def _sendfile_native(self, transp, file, offset, count):
        if not isinstance(transp, SocketTransport):
            raise exceptions.SendfileNotAvailableError(f"sendfile is not native on {transp!r}")
        # As asyncio's selector loop: queued data first, no reading meanwhile; the transfer goes
        # through sock_sendfile()'s checks, with no fallback of its own.
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            sock = transp._sock
            if sock is None:
                raise ConnectionError("Connection is closed by peer")
            if self._debug and sock.gettimeout() != 0:
                raise ValueError("the socket must be non-blocking")
            self._check_sendfile_params(sock, file, offset, count)
            return await self._sendfile_to(sock, file, offset, count, transp)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()

    # asyncio's os.sendfile() loop, for the systems whose sendfile(2) levent does not drive itself.
    # (attr-defined: typeshed leaves out these private helpers of the selector loop.)
    _sock_sendfile_native_impl = _SelectorLoop._sock_sendfile_native_impl  # type: ignore[attr-defined]
    _sock_sendfile_update_filepos = _SelectorLoop._sock_sendfile_update_filepos  # type: ignore[attr-defined]
    _sock_add_cancellation_callback = (
        _SelectorLoop._sock_add_cancellation_callback)  # type: ignore[attr-defined]

    async def _sendfile_to(self, sock, file, offset, count, transp):
        if not _sendfile.NATIVE:
            # asyncio's os.sendfile() path, whose add_writer() must not see the transport's fd.
            fd = sock.fileno()
            if transp is not None:
                del self._transports[fd]
            try:
                return await _SelectorLoop._sock_sendfile_native(self, sock, file, offset, count)
            finally:
                if transp is not None:
                    self._transports[fd] = transp
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0    # an empty file
        fut, op = _sendfile.sendfile(self, sock.fileno(), fileno, offset, count, blocksize)
        if transp is not None:
            transp._set_sendfile_op(op)
        try:
            return await fut
        finally:
            if transp is not None:
                transp._set_sendfile_op(None)

    async def sock_connect(self, sock, address):
        """Connect ``sock`` to ``address`` (resolved first for IP sockets, as asyncio does)."""
        _check_socket(self, sock)
        if sock.family == socket.AF_INET or (_HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await self._ensure_resolved(address, family=sock.family, type=sock.type,
                                                   proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        fut = self.create_future()
        fd = sock.fileno()
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            # In progress (EINTR too: the connection goes on in the background): writable when done.
            self._ensure_fd_no_transport(fd)
            handle = self._add_writer(fd, self._sock_connect_cb, fut, sock, address)
            fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))
        else:
            return
        try:
            return await fut
        finally:
            fut = None  # breaks the cycle through the exception's traceback

    def _sock_connect_cb(self, fut, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f'Connect call failed {address}')
        except (BlockingIOError, InterruptedError):
            pass
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            fut = None

    async def sock_accept(self, sock):
        """Accept a connection on listening socket ``sock``: ``(conn, address)``, conn
        non-blocking."""
        _check_socket(self, sock)
        while True:
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                await self._sock_read(sock, _readable)
                continue
            conn.setblocking(False)
            return conn, address


def _readable():
    # For sock_accept(): the wait ends when the listening socket is readable; accept() runs in
    # sock_accept itself, so that a connection is never accepted for a cancelled call and lost.
    return None
