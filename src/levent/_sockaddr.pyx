"""Socket addresses: the socket module's Python form <-> struct sockaddr.

IPv4 ``(host, port)``, IPv6 ``(host, port[, flowinfo, scope_id])`` and AF_UNIX paths (str, bytes or
os.PathLike; a leading NUL is Linux's abstract namespace), as ``socket.socket.bind()`` takes them.
A host that is not a numeric address is resolved with ``socket.getaddrinfo`` (blocking).
"""
from libc.string cimport memset, memcpy
from libevent_pxd.util cimport sockaddr, sockaddr_storage, socklen_t


import os
import socket as _socket

cdef extern from "sys/socket.h" nogil:
    enum:
        AF_UNSPEC
        AF_INET
        AF_INET6
        AF_UNIX

cdef extern from "netinet/in.h" nogil:
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)
    unsigned int htonl(unsigned int)
    unsigned int ntohl(unsigned int)

cdef extern from "sys/un.h" nogil:
    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


cdef socklen_t sockaddr_from(object address, sockaddr_storage *out, int family) except 0:
    memset(out, 0, sizeof(sockaddr_storage))
    if isinstance(address, (str, bytes, os.PathLike)):
        if family not in (AF_UNSPEC, AF_UNIX):
            raise ValueError(f"a path is an AF_UNIX address, but the socket's family is {family}")
        return _unix(address, <sockaddr_un *>out)
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError("address must be (host, port), (host, port, flowinfo, scope_id) or an AF_UNIX "
                        f"path, not {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    cdef bytes host_b = host.encode("idna") if host else b""
    cdef sockaddr_in *sin = <sockaddr_in *>out
    cdef sockaddr_in6 *sin6 = <sockaddr_in6 *>out
    if len(address) == 2 and family in (AF_UNSPEC, AF_INET):
        if host_b == b"":
            host_b = b"0.0.0.0"
        if inet_pton(AF_INET, host_b, &sin.sin_addr) == 1:
            sin.sin_family = AF_INET
            sin.sin_port = htons(port)
            return sizeof(sockaddr_in)
    if family in (AF_UNSPEC, AF_INET6):
        if inet_pton(AF_INET6, host_b or b"::", &sin6.sin6_addr) == 1:
            sin6.sin6_family = AF_INET6
            sin6.sin6_port = htons(port)
            if len(address) == 4:
                sin6.sin6_flowinfo = htonl(address[2])
                sin6.sin6_scope_id = address[3]
            return sizeof(sockaddr_in6)
    # A name: resolve it (blocking), keeping the first stream address of the wanted family.
    infos = _socket.getaddrinfo(host, port, family, _socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo returned no address for {host!r}")
    return sockaddr_from(infos[0][4], out, infos[0][0])


cdef socklen_t _unix(object path, sockaddr_un *sun) except 0:
    cdef bytes raw = os.fsencode(path)
    if len(raw) >= sizeof(sun.sun_path) or len(raw) == 0:
        raise ValueError(f"an AF_UNIX path must have 1 to {sizeof(sun.sun_path) - 1} bytes, not {len(raw)}")
    sun.sun_family = AF_UNIX
    memcpy(sun.sun_path, <char *>raw, len(raw))
    # Abstract names (leading NUL) are exactly as long as given; paths are NUL-terminated.
    return <socklen_t>(<size_t>&(<sockaddr_un *>NULL).sun_path + len(raw) + (0 if raw[0] == 0 else 1))


cdef object sockaddr_to(const sockaddr *sa, socklen_t length):
    cdef char text[64]
    cdef const sockaddr_in *sin
    cdef const sockaddr_in6 *sin6
    cdef const sockaddr_un *sun
    cdef size_t offset, n
    if sa == NULL or length == 0:
        return None
    if sa.sa_family == AF_INET:
        sin = <const sockaddr_in *>sa
        inet_ntop(AF_INET, &sin.sin_addr, text, sizeof(text))
        return (text.decode(), ntohs(sin.sin_port))
    if sa.sa_family == AF_INET6:
        sin6 = <const sockaddr_in6 *>sa
        inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof(text))
        return (text.decode(), ntohs(sin6.sin6_port), ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        sun = <const sockaddr_un *>sa
        offset = <size_t>&(<sockaddr_un *>NULL).sun_path
        if length <= offset:
            return ""      # an unnamed socket, as the socket module reports it
        n = length - offset
        if sun.sun_path[0] == 0:
            return sun.sun_path[:n]                  # abstract: bytes, as the socket module does
        raw = sun.sun_path[:n].split(b"\0", 1)[0]
        return os.fsdecode(raw)
    return (sa.sa_family, (<const char *>sa)[:length])
