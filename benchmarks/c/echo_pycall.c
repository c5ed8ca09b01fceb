/* echo_pycall.c: the C ceiling (echo_raw.c) plus the one Python call an asyncio Protocol server makes
 * per read.
 *
 * An asyncio Protocol echo server runs, per read, protocol.data_received(data), whose body
 * self.transport.write(data) calls back into the loop. This server does that and nothing more: the
 * same libevent events and one recv() as echo_raw.c, into a bytes object, and the bound method
 * data_received of the benchmark's own protocol class (levent.bench.servers.EchoProtocol), whose
 * transport.write() is a C function that send()s. Its user-space work is the least an asyncio
 * Protocol server does per echo (a loop adds its own on top); its kernel work is the C ceiling's.
 *
 * It embeds the Python it was built against: the benchmark builds it with that interpreter's flags
 * and passes that interpreter's sys.path, from which it imports the protocol class. The GIL is held
 * throughout (no release around the wait, which a loop must do).
 *
 *     echo_pycall PORT SYS_PATH
 *
 * Listens on 127.0.0.1:PORT, prints "ready" once listening, and exits with status 0 on SIGINT or
 * SIGTERM (1 if Python raised: the traceback is on stderr).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "server.h"

#define BUF_SIZE 65536  /* what one recv() reads, as echo_raw.c */

struct conn {
    evutil_socket_t fd;
    struct event *rev;         /* EV_READ | EV_PERSIST: pending while nothing is left unsent */
    struct event *wev;         /* EV_WRITE | EV_PERSIST: pending while out[off:len] is unsent */
    PyObject *transport;       /* a Transport pointing back here */
    PyObject *data_received;   /* the protocol's bound method */
    char *out;                 /* what write() could not send at once (malloc'd) */
    size_t off, len;
    int failed;                /* a send() failed: read_cb frees the connection after the call */
    struct conn *prev, *next;
};

typedef struct {
    PyObject_HEAD
    struct conn *conn;  /* NULL once the connection is gone */
} Transport;

static struct conn *conns;
static PyObject *protocol_class;

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->wev);
    evutil_closesocket(c->fd);
    ((Transport *)c->transport)->conn = NULL;
    Py_DECREF(c->transport);
    Py_XDECREF(c->data_received);
    free(c->out);
    free(c);
}

/* Sends out[off:len]: 0 when all of it went, 1 when some is left, -1 on error. */
static int flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0)
            return would_block() ? 1 : -1;
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

/* Transport.write(data): send() at once when nothing waits, else (or for the rest) queue a copy and
 * stop reading until it is out, as echo_raw.c does. */
static PyObject *transport_write(PyObject *self, PyObject *data)
{
    struct conn *c = ((Transport *)self)->conn;
    Py_buffer view;
    size_t done = 0;
    char *grown;
    if (!c) {
        PyErr_SetString(PyExc_RuntimeError, "the connection is closed");
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (c->len == 0) {
        ssize_t n = send(c->fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
        if (n < 0 && !would_block()) {  /* the peer is gone (a loadgen that stopped): drop it */
            c->failed = 1;
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        done = n > 0 ? (size_t)n : 0;
    }
    if (done < (size_t)view.len) {
        grown = realloc(c->out, c->len + (size_t)view.len - done);
        if (!grown) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        c->out = grown;
        memcpy(c->out + c->len, (char *)view.buf + done, (size_t)view.len - done);
        c->len += (size_t)view.len - done;
        event_del(c->rev);
        event_add(c->wev, NULL);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* A heap type's instances hold a reference to it. */
static void transport_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef transport_methods[] = {
    {"write", transport_write, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot transport_slots[] = {
    {Py_tp_methods, transport_methods},
    {Py_tp_dealloc, transport_dealloc},
    {0, NULL},
};

static PyType_Spec transport_spec = {"echo_pycall.Transport", sizeof(Transport), 0, Py_TPFLAGS_DEFAULT,
                                     transport_slots};

static PyObject *transport_type;

static int python_failed;

static void stop_on_python_error(void)
{
    PyErr_Print();
    python_failed = 1;
    event_base_loopbreak(base);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    switch (flush(c)) {
    case 0:
        event_del(c->wev);
        event_add(c->rev, NULL);
        break;
    case 1:
        break;
    default:
        conn_free(c);
    }
}

/* The bytes object data_received() got, kept when nothing else holds it after the call: the next
 * read lands in it, so no read allocates or copies in user space (levent's transports do the same). */
static PyObject *spare;

static void set_size(PyObject *b, Py_ssize_t n)
{
    Py_SET_SIZE(b, n);
    PyBytes_AS_STRING(b)[n] = 0;
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)b)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    PyObject *data, *res;
    ssize_t n;
    (void)what;
    if (spare) {
        data = spare;
        spare = NULL;
        Py_SET_SIZE(data, BUF_SIZE);
    } else if (!(data = PyBytes_FromStringAndSize(NULL, BUF_SIZE))) {
        stop_on_python_error();
        return;
    }
    n = recv(fd, PyBytes_AS_STRING(data), BUF_SIZE, 0);
    if (n <= 0) {
        spare = data;
        if (n == 0 || !would_block())
            conn_free(c);
        return;
    }
    set_size(data, n);
    res = PyObject_CallOneArg(c->data_received, data);
    if (Py_REFCNT(data) == 1)
        spare = data;
    else
        Py_DECREF(data);
    if (!res) {
        stop_on_python_error();
        return;
    }
    Py_DECREF(res);
    if (c->failed)
        conn_free(c);
}

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *arg)
{
    struct conn *c;
    PyObject *protocol, *res;
    int one = 1;
    (void)listener;
    (void)sa;
    (void)socklen;
    (void)arg;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->fd = fd;
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, write_cb, c);
    c->transport = PyType_GenericAlloc((PyTypeObject *)transport_type, 0);
    if (!c->rev || !c->wev || !c->transport || event_add(c->rev, NULL) < 0) {
        fprintf(stderr, "echo_pycall: cannot set up a connection\n");
        exit(1);
    }
    ((Transport *)c->transport)->conn = c;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    protocol = PyObject_CallNoArgs(protocol_class);
    res = protocol ? PyObject_CallMethod(protocol, "connection_made", "O", c->transport) : NULL;
    c->data_received = protocol ? PyObject_GetAttrString(protocol, "data_received") : NULL;
    Py_XDECREF(protocol);
    if (!res || !c->data_received) {
        stop_on_python_error();
        return;
    }
    Py_DECREF(res);
}

int main(int argc, char **argv)
{
    PyObject *servers;
    int port, status;

    prog = "echo_pycall";
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT SYS_PATH\n", argv[0]);
        return 2;
    }
    port = parse_port(argv[1]);
    if (port < 0)
        return 2;
    setenv("PYTHONPATH", argv[2], 1);
    Py_InitializeEx(0);  /* 0: no Python signal handlers, libevent's take SIGINT/SIGTERM */
    servers = PyImport_ImportModule("levent.bench.servers");
    protocol_class = servers ? PyObject_GetAttrString(servers, "EchoProtocol") : NULL;
    transport_type = PyType_FromSpec(&transport_spec);
    if (!protocol_class || !transport_type) {
        PyErr_Print();
        return 1;
    }
    if (new_base())
        return 1;
    status = serve(port, accept_cb);
    while (conns)
        conn_free(conns);
    event_base_free(base);
    Py_XDECREF(spare);
    Py_DECREF(protocol_class);
    Py_DECREF(transport_type);
    Py_XDECREF(servers);
    status = status || python_failed;
    return Py_FinalizeEx() < 0 ? 1 : status;
}
