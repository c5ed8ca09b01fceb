# event2/event.h: event_base, event_config, event and the loop.
from posix.time cimport timeval
from libc.stdio cimport FILE
from libevent_pxd.util cimport evutil_socket_t, ev_uint32_t
from libevent_pxd.event_struct cimport event

cdef extern from "event2/event.h" nogil:
    struct event_base
    struct event_config

    ctypedef void (*event_callback_fn)(evutil_socket_t, short, void *)
    ctypedef void (*event_log_cb)(int severity, const char *msg)
    ctypedef void (*event_fatal_cb)(int err)
    ctypedef int (*event_base_foreach_event_cb)(const event_base *, const event *, void *)

    enum:
        EV_TIMEOUT
        EV_READ
        EV_WRITE
        EV_SIGNAL
        EV_PERSIST
        EV_ET
        EV_FINALIZE
        EV_CLOSED

    enum:
        EVLOOP_ONCE
        EVLOOP_NONBLOCK
        EVLOOP_NO_EXIT_ON_EMPTY

    enum event_method_feature:
        EV_FEATURE_ET
        EV_FEATURE_O1
        EV_FEATURE_FDS
        EV_FEATURE_EARLY_CLOSE

    enum event_base_config_flag:
        EVENT_BASE_FLAG_NOLOCK
        EVENT_BASE_FLAG_IGNORE_ENV
        EVENT_BASE_FLAG_STARTUP_IOCP
        EVENT_BASE_FLAG_NO_CACHE_TIME
        EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST
        EVENT_BASE_FLAG_PRECISE_TIMER

    enum:
        EVENT_BASE_COUNT_ACTIVE
        EVENT_BASE_COUNT_VIRTUAL
        EVENT_BASE_COUNT_ADDED

    enum:
        EVENT_LOG_DEBUG
        EVENT_LOG_MSG
        EVENT_LOG_WARN
        EVENT_LOG_ERR

    enum:
        EVENT_MAX_PRIORITIES
        LIBEVENT_VERSION_NUMBER

    # versions and methods
    const char *event_get_version()
    ev_uint32_t event_get_version_number()
    const char **event_get_supported_methods()
    size_t event_get_struct_event_size()

    # logging and debugging
    void event_set_log_callback(event_log_cb cb)
    void event_set_fatal_callback(event_fatal_cb cb)
    void event_enable_debug_mode()
    void event_debug_unassign(event *)

    # configuration
    event_config *event_config_new()
    void event_config_free(event_config *cfg)
    int event_config_avoid_method(event_config *cfg, const char *method)
    int event_config_require_features(event_config *cfg, int feature)
    int event_config_set_flag(event_config *cfg, int flag)
    int event_config_set_num_cpus_hint(event_config *cfg, int cpus)
    int event_config_set_max_dispatch_interval(event_config *cfg, const timeval *max_interval,
                                               int max_callbacks, int min_priority)

    # the base
    event_base *event_base_new()
    event_base *event_base_new_with_config(const event_config *)
    void event_base_free(event_base *)
    int event_reinit(event_base *base)
    const char *event_base_get_method(const event_base *)
    int event_base_get_features(const event_base *base)
    int event_base_priority_init(event_base *, int)
    int event_base_get_npriorities(event_base *eb)
    int event_base_get_num_events(event_base *, unsigned int)
    int event_base_get_max_events(event_base *, unsigned int, int)
    int event_base_gettimeofday_cached(event_base *base, timeval *tv)
    int event_base_update_cache_time(event_base *base)
    int event_gettime_monotonic(event_base *base, timeval *tp)
    void event_base_dump_events(event_base *, FILE *)
    int event_base_foreach_event(event_base *base, event_base_foreach_event_cb fn, void *arg)
    void event_base_active_by_fd(event_base *base, evutil_socket_t fd, short events)
    void event_base_active_by_signal(event_base *base, int sig)
    const timeval *event_base_init_common_timeout(event_base *base, const timeval *duration)

    # the loop
    int event_base_dispatch(event_base *)
    int event_base_loop(event_base *, int)
    int event_base_loopexit(event_base *, const timeval *)
    int event_base_loopbreak(event_base *)
    int event_base_loopcontinue(event_base *)
    int event_base_got_exit(event_base *)
    int event_base_got_break(event_base *)
    int event_base_once(event_base *, evutil_socket_t, short, event_callback_fn, void *, const timeval *)

    # events
    int event_assign(event *, event_base *, evutil_socket_t, short, event_callback_fn, void *)
    event *event_new(event_base *, evutil_socket_t, short, event_callback_fn, void *)
    void event_free(event *)
    int event_add(event *ev, const timeval *timeout)
    int event_remove_timer(event *ev)
    int event_del(event *)
    int event_del_noblock(event *ev)
    int event_del_block(event *ev)
    void event_active(event *ev, int res, short ncalls)
    int event_pending(const event *ev, short events, timeval *tv)
    event *event_base_get_running_event(event_base *base)
    int event_initialized(const event *ev)
    evutil_socket_t event_get_fd(const event *ev)
    event_base *event_get_base(const event *ev)
    short event_get_events(const event *ev)
    int event_priority_set(event *, int)
    int event_get_priority(const event *ev)
