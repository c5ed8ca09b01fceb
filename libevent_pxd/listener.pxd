# event2/listener.h: evconnlistener, a listening socket that accepts and hands over connections.
from libevent_pxd.util cimport evutil_socket_t, sockaddr
from libevent_pxd.event cimport event_base

cdef extern from "event2/listener.h" nogil:
    struct evconnlistener

    ctypedef void (*evconnlistener_cb)(evconnlistener *, evutil_socket_t, sockaddr *, int socklen, void *)
    ctypedef void (*evconnlistener_errorcb)(evconnlistener *, void *)

    enum:
        LEV_OPT_LEAVE_SOCKETS_BLOCKING
        LEV_OPT_CLOSE_ON_FREE
        LEV_OPT_CLOSE_ON_EXEC
        LEV_OPT_REUSEABLE
        LEV_OPT_THREADSAFE
        LEV_OPT_DISABLED
        LEV_OPT_DEFERRED_ACCEPT
        LEV_OPT_REUSEABLE_PORT
        LEV_OPT_BIND_IPV6ONLY

    evconnlistener *evconnlistener_new(event_base *base, evconnlistener_cb cb, void *ptr, unsigned flags,
                                       int backlog, evutil_socket_t fd)
    evconnlistener *evconnlistener_new_bind(event_base *base, evconnlistener_cb cb, void *ptr,
                                            unsigned flags, int backlog, const sockaddr *sa, int socklen)
    void evconnlistener_free(evconnlistener *lev)
    int evconnlistener_enable(evconnlistener *lev)
    int evconnlistener_disable(evconnlistener *lev)
    event_base *evconnlistener_get_base(evconnlistener *lev)
    evutil_socket_t evconnlistener_get_fd(evconnlistener *lev)
    void evconnlistener_set_cb(evconnlistener *lev, evconnlistener_cb cb, void *arg)
    void evconnlistener_set_error_cb(evconnlistener *lev, evconnlistener_errorcb errorcb)
