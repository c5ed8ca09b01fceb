/*
 * echo_raw: a TCP echo server that uses libevent only as the poller.
 *
 *     echo_raw PORT
 *
 * Listens on 127.0.0.1:PORT (an evconnlistener), prints "ready" on stdout once listening, and exits
 * with status 0 on SIGINT or SIGTERM after freeing every connection.
 *
 * Per connection: one persistent EV_READ event whose callback does ONE recv() into the connection's
 * buffer (BUF_SIZE bytes) and send()s what it got straight back. If the kernel takes only part of it,
 * the unsent bytes stay in the buffer, the read event is deleted (reads pause, so the buffer is never
 * overwritten and a slow reader cannot make us buffer without bound) and a persistent EV_WRITE event is
 * added; its callback sends the rest and, once drained, swaps back to the read event.
 *
 * This is the floor the other servers are compared with: the per-echo cost is libevent's dispatch
 * plus the recv/send system calls, with no buffer management beyond one fixed array.
 *
 * Accepted sockets are non-blocking (evconnlistener's default) and get TCP_NODELAY, as asyncio's
 * transports do.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "server.h"

#define BUF_SIZE 65536

struct conn {
    evutil_socket_t fd;
    struct event *rev;  /* EV_READ | EV_PERSIST: pending while nothing is left unsent */
    struct event *wev;  /* EV_WRITE | EV_PERSIST: pending while buf[off:len] is unsent */
    size_t off, len;
    struct conn *prev, *next;  /* every open connection, so that exit frees them all */
    char buf[BUF_SIZE];
};

static struct conn *conns;

static void conn_free(struct conn *c)
{
    event_free(c->rev);
    event_free(c->wev);
    evutil_closesocket(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Sends buf[off:len]. Returns 0 when drained, 1 when bytes are left, -1 on a connection error. */
static int flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (would_block())
                return 1;
            return -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    switch (flush(c)) {
    case 0:  /* drained: stop watching for writability, resume reading */
        event_del(c->wev);
        event_add(c->rev, NULL);
        break;
    case 1:
        break;
    default:
        conn_free(c);
    }
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;
    (void)what;
    n = recv(fd, c->buf, BUF_SIZE, 0);
    if (n < 0) {
        if (!would_block())
            conn_free(c);
        return;
    }
    if (n == 0) {  /* the peer closed */
        conn_free(c);
        return;
    }
    c->off = 0;
    c->len = (size_t)n;
    switch (flush(c)) {
    case 0:
        break;
    case 1:  /* partial send: pause reads until the rest is out */
        event_del(c->rev);
        event_add(c->wev, NULL);
        break;
    default:
        conn_free(c);
    }
}

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *arg)
{
    struct conn *c;
    int one = 1;
    (void)listener;
    (void)sa;
    (void)socklen;
    (void)arg;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = malloc(sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->fd = fd;
    c->off = c->len = 0;
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, write_cb, c);
    if (!c->rev || !c->wev || event_add(c->rev, NULL) < 0) {
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->prev = NULL;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
}

int main(int argc, char **argv)
{
    int port, status;

    prog = "echo_raw";
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    port = parse_port(argv[1]);
    if (port < 0)
        return 2;
    if (new_base())
        return 1;
    status = serve(port, accept_cb);
    while (conns)
        conn_free(conns);
    event_base_free(base);
    return status;
}
