# event2/util.h: portable types and socket helpers.
from posix.time cimport timeval


# The socket address structs libevent's API takes (event2/util.h uses them from sys/socket.h).
cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family

cdef extern from "event2/util.h" nogil:
    ctypedef int evutil_socket_t
    ctypedef unsigned char ev_uint8_t
    ctypedef unsigned int ev_uint32_t
    ctypedef unsigned long long ev_uint64_t
    ctypedef long ev_ssize_t
    ctypedef long ev_off_t

    int evutil_make_socket_nonblocking(evutil_socket_t sock)
    int evutil_make_socket_closeonexec(evutil_socket_t sock)
    int evutil_make_listen_socket_reuseable(evutil_socket_t sock)
    int evutil_closesocket(evutil_socket_t sock)
    int evutil_socketpair(int d, int type, int protocol, evutil_socket_t sv[2])
    int evutil_gettimeofday(timeval *tv, void *tz)
    const char *evutil_socket_error_to_string(int errcode)
