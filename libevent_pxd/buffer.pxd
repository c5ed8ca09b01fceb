# event2/buffer.h: evbuffer, libevent's chain-of-blocks byte buffer.
from libevent_pxd.util cimport evutil_socket_t, ev_ssize_t, ev_off_t, ev_uint32_t, ev_uint64_t
from libevent_pxd.event cimport event_base

cdef extern from "stdarg.h":
    # Only for evbuffer_add_vprintf's prototype; levent never builds a va_list.
    ctypedef struct va_list:
        pass

cdef extern from "event2/buffer.h" nogil:
    struct evbuffer

    # A position in an evbuffer; only pos is public (the rest is libevent's, and is invalidated by
    # any change to the buffer).
    struct evbuffer_ptr:
        ev_ssize_t pos

    # A #define for struct iovec where sys/uio.h exists.
    struct evbuffer_iovec:
        void *iov_base
        size_t iov_len

    enum:
        EVBUFFER_FLAG_DRAINS_TO_FD

    enum evbuffer_eol_style:
        EVBUFFER_EOL_ANY
        EVBUFFER_EOL_CRLF
        EVBUFFER_EOL_CRLF_STRICT
        EVBUFFER_EOL_LF
        EVBUFFER_EOL_NUL

    enum evbuffer_ptr_how:
        EVBUFFER_PTR_SET
        EVBUFFER_PTR_ADD

    struct evbuffer_cb_info:
        size_t orig_size
        size_t n_added
        size_t n_deleted

    ctypedef void (*evbuffer_cb_func)(evbuffer *buffer, const evbuffer_cb_info *info, void *arg)
    struct evbuffer_cb_entry

    enum:
        EVBUFFER_CB_ENABLED

    ctypedef void (*evbuffer_ref_cleanup_cb)(const void *data, size_t datalen, void *extra)

    struct evbuffer_file_segment
    ctypedef void (*evbuffer_file_segment_cleanup_cb)(const evbuffer_file_segment *seg, int flags,
                                                      void *arg)

    enum:
        EVBUF_FS_CLOSE_ON_FREE
        EVBUF_FS_DISABLE_MMAP
        EVBUF_FS_DISABLE_SENDFILE
        EVBUF_FS_DISABLE_LOCKING

    # life cycle, locking, flags
    evbuffer *evbuffer_new()
    void evbuffer_free(evbuffer *buf)
    int evbuffer_enable_locking(evbuffer *buf, void *lock)
    void evbuffer_lock(evbuffer *buf)
    void evbuffer_unlock(evbuffer *buf)
    int evbuffer_set_flags(evbuffer *buf, ev_uint64_t flags)
    int evbuffer_clear_flags(evbuffer *buf, ev_uint64_t flags)
    int evbuffer_defer_callbacks(evbuffer *buffer, event_base *base)

    # size and space
    size_t evbuffer_get_length(const evbuffer *buf)
    size_t evbuffer_get_contiguous_space(const evbuffer *buf)
    int evbuffer_expand(evbuffer *buf, size_t datlen)
    int evbuffer_reserve_space(evbuffer *buf, ev_ssize_t size, evbuffer_iovec *vec, int n_vec)
    int evbuffer_commit_space(evbuffer *buf, evbuffer_iovec *vec, int n_vecs)

    # adding
    int evbuffer_add(evbuffer *buf, const void *data, size_t datlen)
    int evbuffer_prepend(evbuffer *buf, const void *data, size_t size)
    int evbuffer_add_buffer(evbuffer *outbuf, evbuffer *inbuf)
    int evbuffer_prepend_buffer(evbuffer *dst, evbuffer *src)
    int evbuffer_add_buffer_reference(evbuffer *outbuf, evbuffer *inbuf)
    int evbuffer_add_reference(evbuffer *outbuf, const void *data, size_t datlen,
                               evbuffer_ref_cleanup_cb cleanupfn, void *cleanupfn_arg)
    size_t evbuffer_add_iovec(evbuffer *buffer, evbuffer_iovec *vec, int n_vec)
    int evbuffer_add_printf(evbuffer *buf, const char *fmt, ...)
    int evbuffer_add_vprintf(evbuffer *buf, const char *fmt, va_list ap)

    # files
    int evbuffer_add_file(evbuffer *outbuf, int fd, ev_off_t offset, ev_off_t length)
    evbuffer_file_segment *evbuffer_file_segment_new(int fd, ev_off_t offset, ev_off_t length,
                                                     unsigned flags)
    void evbuffer_file_segment_free(evbuffer_file_segment *seg)
    void evbuffer_file_segment_add_cleanup_cb(evbuffer_file_segment *seg,
                                              evbuffer_file_segment_cleanup_cb cb, void *arg)
    int evbuffer_add_file_segment(evbuffer *buf, evbuffer_file_segment *seg, ev_off_t offset,
                                  ev_off_t length)

    # removing and reading
    int evbuffer_remove(evbuffer *buf, void *data, size_t datlen)
    ev_ssize_t evbuffer_copyout(evbuffer *buf, void *data_out, size_t datlen)
    ev_ssize_t evbuffer_copyout_from(evbuffer *buf, const evbuffer_ptr *pos, void *data_out,
                                     size_t datlen)
    int evbuffer_remove_buffer(evbuffer *src, evbuffer *dst, size_t datlen)
    char *evbuffer_readln(evbuffer *buffer, size_t *n_read_out, evbuffer_eol_style eol_style)
    int evbuffer_drain(evbuffer *buf, size_t len)
    unsigned char *evbuffer_pullup(evbuffer *buf, ev_ssize_t size)
    int evbuffer_peek(evbuffer *buffer, ev_ssize_t len, evbuffer_ptr *start_at,
                      evbuffer_iovec *vec_out, int n_vec)

    # file descriptors
    int evbuffer_write(evbuffer *buffer, evutil_socket_t fd)
    int evbuffer_write_atmost(evbuffer *buffer, evutil_socket_t fd, ev_ssize_t howmuch)
    int evbuffer_read(evbuffer *buffer, evutil_socket_t fd, int howmuch)

    # searching
    evbuffer_ptr evbuffer_search(evbuffer *buffer, const char *what, size_t len,
                                 const evbuffer_ptr *start)
    evbuffer_ptr evbuffer_search_range(evbuffer *buffer, const char *what, size_t len,
                                       const evbuffer_ptr *start, const evbuffer_ptr *end)
    int evbuffer_ptr_set(evbuffer *buffer, evbuffer_ptr *ptr, size_t position, evbuffer_ptr_how how)
    evbuffer_ptr evbuffer_search_eol(evbuffer *buffer, evbuffer_ptr *start, size_t *eol_len_out,
                                     evbuffer_eol_style eol_style)

    # change callbacks
    evbuffer_cb_entry *evbuffer_add_cb(evbuffer *buffer, evbuffer_cb_func cb, void *cbarg)
    int evbuffer_remove_cb_entry(evbuffer *buffer, evbuffer_cb_entry *ent)
    int evbuffer_remove_cb(evbuffer *buffer, evbuffer_cb_func cb, void *cbarg)
    int evbuffer_cb_set_flags(evbuffer *buffer, evbuffer_cb_entry *cb, ev_uint32_t flags)
    int evbuffer_cb_clear_flags(evbuffer *buffer, evbuffer_cb_entry *cb, ev_uint32_t flags)

    # freezing
    int evbuffer_freeze(evbuffer *buf, int at_front)
    int evbuffer_unfreeze(evbuffer *buf, int at_front)
