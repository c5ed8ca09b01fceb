# event2/thread.h: libevent's locking; levent switches pthreads locking on once, at import.
from libevent_pxd.event cimport event_base

cdef extern from "event2/thread.h" nogil:
    int evthread_use_pthreads()
    int evthread_make_base_notifiable(event_base *base)
    void evthread_enable_lock_debugging()
