# event2/event_struct.h: the layout of struct event.
#
# levent embeds a struct event in each Event object (event_assign instead of event_new: one malloc less
# per event); levent._core checks at import that sizeof(struct event) matches the loaded libevent.
# Read: evcb_flags (does libevent still reference the event?) and ev_timeout (the deadline it set).
from posix.time cimport timeval
from libevent_pxd.util cimport evutil_socket_t

cdef extern from "event2/event_struct.h" nogil:
    enum:
        EVLIST_TIMEOUT
        EVLIST_INSERTED
        EVLIST_SIGNAL
        EVLIST_ACTIVE
        EVLIST_INTERNAL
        EVLIST_ACTIVE_LATER
        EVLIST_FINALIZING
        EVLIST_INIT
        EVLIST_ALL

    struct event_callback:
        short evcb_flags

    struct event:
        event_callback ev_evcallback
        evutil_socket_t ev_fd
        short ev_events
        short ev_res
        timeval ev_timeout
