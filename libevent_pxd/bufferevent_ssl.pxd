# event2/bufferevent_ssl.h: bufferevents that speak TLS through OpenSSL (libevent_openssl).
from libevent_pxd.util cimport evutil_socket_t
from libevent_pxd.event cimport event_base
from libevent_pxd.bufferevent cimport bufferevent

cdef extern from "event2/bufferevent_ssl.h" nogil:
    struct ssl_st

    enum bufferevent_ssl_state:
        BUFFEREVENT_SSL_OPEN
        BUFFEREVENT_SSL_CONNECTING
        BUFFEREVENT_SSL_ACCEPTING

    bufferevent *bufferevent_openssl_filter_new(event_base *base, bufferevent *underlying, ssl_st *ssl,
                                                bufferevent_ssl_state state, int options)
    bufferevent *bufferevent_openssl_socket_new(event_base *base, evutil_socket_t fd, ssl_st *ssl,
                                                bufferevent_ssl_state state, int options)
    int bufferevent_openssl_get_allow_dirty_shutdown(bufferevent *bev)
    void bufferevent_openssl_set_allow_dirty_shutdown(bufferevent *bev, int allow_dirty_shutdown)
    ssl_st *bufferevent_openssl_get_ssl(bufferevent *bufev)
    int bufferevent_ssl_renegotiate(bufferevent *bev)
    unsigned long bufferevent_get_openssl_error(bufferevent *bev)
