# event2/bufferevent.h: buffered I/O on sockets, pairs and filters; rate limits.
from posix.time cimport timeval
from libevent_pxd.util cimport evutil_socket_t, ev_ssize_t, sockaddr
from libevent_pxd.event cimport event_base
from libevent_pxd.buffer cimport evbuffer

cdef extern from "event2/bufferevent.h" nogil:
    struct bufferevent
    struct ev_token_bucket_cfg
    struct bufferevent_rate_limit_group

    enum:
        BEV_EVENT_READING
        BEV_EVENT_WRITING
        BEV_EVENT_EOF
        BEV_EVENT_ERROR
        BEV_EVENT_TIMEOUT
        BEV_EVENT_CONNECTED

    enum bufferevent_options:
        BEV_OPT_CLOSE_ON_FREE
        BEV_OPT_THREADSAFE
        BEV_OPT_DEFER_CALLBACKS
        BEV_OPT_UNLOCK_CALLBACKS

    enum bufferevent_flush_mode:
        BEV_NORMAL
        BEV_FLUSH
        BEV_FINISHED

    enum bufferevent_filter_result:
        BEV_OK
        BEV_NEED_MORE
        BEV_ERROR

    enum bufferevent_trigger_options:
        BEV_TRIG_IGNORE_WATERMARKS
        BEV_TRIG_DEFER_CALLBACKS

    ctypedef void (*bufferevent_data_cb)(bufferevent *bev, void *ctx)
    ctypedef void (*bufferevent_event_cb)(bufferevent *bev, short what, void *ctx)
    ctypedef bufferevent_filter_result (*bufferevent_filter_cb)(
        evbuffer *src, evbuffer *dst, ev_ssize_t dst_limit, bufferevent_flush_mode mode, void *ctx)

    bufferevent *bufferevent_socket_new(event_base *base, evutil_socket_t fd, int options)
    int bufferevent_socket_connect(bufferevent *, const sockaddr *, int)
    int bufferevent_base_set(event_base *base, bufferevent *bufev)
    event_base *bufferevent_get_base(bufferevent *bev)
    int bufferevent_priority_set(bufferevent *bufev, int pri)
    int bufferevent_get_priority(const bufferevent *bufev)
    void bufferevent_free(bufferevent *bufev)
    void bufferevent_setcb(bufferevent *bufev, bufferevent_data_cb readcb, bufferevent_data_cb writecb,
                           bufferevent_event_cb eventcb, void *cbarg)
    int bufferevent_setfd(bufferevent *bufev, evutil_socket_t fd)
    evutil_socket_t bufferevent_getfd(bufferevent *bufev)
    bufferevent *bufferevent_get_underlying(bufferevent *bufev)
    int bufferevent_write(bufferevent *bufev, const void *data, size_t size)
    int bufferevent_write_buffer(bufferevent *bufev, evbuffer *buf)
    size_t bufferevent_read(bufferevent *bufev, void *data, size_t size)
    int bufferevent_read_buffer(bufferevent *bufev, evbuffer *buf)
    evbuffer *bufferevent_get_input(bufferevent *bufev)
    evbuffer *bufferevent_get_output(bufferevent *bufev)
    int bufferevent_enable(bufferevent *bufev, short event)
    int bufferevent_disable(bufferevent *bufev, short event)
    short bufferevent_get_enabled(bufferevent *bufev)
    int bufferevent_set_timeouts(bufferevent *bufev, const timeval *timeout_read,
                                 const timeval *timeout_write)
    void bufferevent_setwatermark(bufferevent *bufev, short events, size_t lowmark, size_t highmark)
    int bufferevent_getwatermark(bufferevent *bufev, short events, size_t *lowmark, size_t *highmark)
    void bufferevent_lock(bufferevent *bufev)
    void bufferevent_unlock(bufferevent *bufev)
    int bufferevent_flush(bufferevent *bufev, short iotype, bufferevent_flush_mode mode)
    void bufferevent_trigger(bufferevent *bufev, short iotype, int options)
    void bufferevent_trigger_event(bufferevent *bufev, short what, int options)

    bufferevent *bufferevent_filter_new(bufferevent *underlying, bufferevent_filter_cb input_filter,
                                        bufferevent_filter_cb output_filter, int options,
                                        void (*free_context)(void *), void *ctx)
    int bufferevent_pair_new(event_base *base, int options, bufferevent *pair[2])
    bufferevent *bufferevent_pair_get_partner(bufferevent *bev)

    ev_token_bucket_cfg *ev_token_bucket_cfg_new(size_t read_rate, size_t read_burst, size_t write_rate,
                                                 size_t write_burst, const timeval *tick_len)
    void ev_token_bucket_cfg_free(ev_token_bucket_cfg *cfg)
    int bufferevent_set_rate_limit(bufferevent *bev, ev_token_bucket_cfg *cfg)
    bufferevent_rate_limit_group *bufferevent_rate_limit_group_new(event_base *base,
                                                                  const ev_token_bucket_cfg *cfg)
    int bufferevent_rate_limit_group_set_cfg(bufferevent_rate_limit_group *, const ev_token_bucket_cfg *)
    void bufferevent_rate_limit_group_free(bufferevent_rate_limit_group *)
    int bufferevent_add_to_rate_limit_group(bufferevent *bev, bufferevent_rate_limit_group *g)
    int bufferevent_remove_from_rate_limit_group(bufferevent *bev)
    ev_ssize_t bufferevent_get_read_limit(bufferevent *bev)
    ev_ssize_t bufferevent_get_write_limit(bufferevent *bev)
