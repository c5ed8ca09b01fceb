# The socket calls levent's modules make themselves (declarations only): with MSG_DONTWAIT they never
# block, so callbacks keep the GIL and skip the socket methods' argument parsing.
from posix.uio cimport iovec
from libevent_pxd.util cimport sockaddr, socklen_t


cdef extern from "sys/socket.h" nogil:
    struct msghdr:
        void *msg_name
        int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    ssize_t c_recv "recv"(int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send"(int fd, const void *buf, size_t n, int flags)
    ssize_t c_sendmsg "sendmsg"(int fd, const msghdr *msg, int flags)
    ssize_t c_recvfrom "recvfrom"(int fd, void *buf, size_t n, int flags, sockaddr *addr, socklen_t *addrlen)
    ssize_t c_sendto "sendto"(int fd, const void *buf, size_t n, int flags, const sockaddr *addr,
                              socklen_t addrlen)
    int c_shutdown "shutdown"(int fd, int how)
    enum:
        MSG_DONTWAIT
        MSG_NOSIGNAL
        SHUT_WR


cdef extern from "sys/ioctl.h" nogil:
    int c_ioctl_int "ioctl"(int fd, unsigned long request, int *arg)
    enum:
        FIONREAD
