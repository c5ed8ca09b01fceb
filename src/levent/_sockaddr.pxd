# Socket addresses between the socket module's Python form and struct sockaddr.

from libevent_pxd.util cimport sockaddr, sockaddr_storage, socklen_t


# Fill *out from a socket-module address (tuple, or a path for AF_UNIX); return its length.
# family: AF_UNSPEC to infer it from the address.
cdef socklen_t sockaddr_from(object address, sockaddr_storage *out, int family) except 0

# The socket-module form of a struct sockaddr.
cdef object sockaddr_to(const sockaddr *sa, socklen_t length)
