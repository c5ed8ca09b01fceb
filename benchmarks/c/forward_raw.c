/*
 * forward_raw: a TCP forwarder (plain TCP proxy) that uses libevent only as the poller.
 *
 *     forward_raw PORT UPSTREAM_PORT
 *
 * Listens on 127.0.0.1:PORT (an evconnlistener); for each connection it connects to
 * 127.0.0.1:UPSTREAM_PORT and moves bytes both ways. Prints "ready" on stdout once listening, and
 * exits with status 0 on SIGINT or SIGTERM after freeing every connection.
 *
 * Per direction (client -> upstream, upstream -> client): one persistent EV_READ event on the source
 * whose callback does ONE recv() into the direction's buffer (BUF_SIZE bytes) and send()s what it got
 * to the destination. If the kernel takes only part of it, the read event is deleted (reads pause,
 * so a slow destination cannot make us buffer without bound) and a persistent EV_WRITE event on the
 * destination sends the rest, then swaps back. An EOF from the source is passed on as
 * shutdown(SHUT_WR) of the destination (half-close); once both directions saw EOF, or on any error,
 * both sockets are closed. Reads start when the upstream connect() completes.
 *
 * This is the ceiling the levent proxy is compared with: the per-chunk cost is libevent's dispatch
 * plus the recv/send system calls, with no buffer management beyond one fixed array per direction.
 *
 * Sockets get TCP_NODELAY, as asyncio's transports do.
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

#define BUF_SIZE (256 * 1024)  /* as levent.proxy's events engine reads */

struct conn;

struct direction {
    struct conn *conn;
    evutil_socket_t src, dst;
    struct event *rev;  /* EV_READ | EV_PERSIST on src: pending while nothing is left unsent */
    struct event *wev;  /* EV_WRITE | EV_PERSIST on dst: pending while buf[off:len] is unsent */
    size_t off, len;
    int eof;            /* src sent EOF, passed on to dst */
    char buf[BUF_SIZE];
};

struct conn {
    evutil_socket_t client, upstream;
    struct event *connecting;  /* EV_WRITE on upstream until connect() completes */
    struct direction up, down;
    struct conn *prev, *next;  /* every open connection, so that exit frees them all */
};

static struct conn *conns;
static struct sockaddr_in upstream_addr;

static void free_event(struct event *ev)
{
    if (ev)  /* a connection that failed half-way through its setup has some */
        event_free(ev);
}

static void conn_free(struct conn *c)
{
    free_event(c->connecting);
    free_event(c->up.rev);
    free_event(c->up.wev);
    free_event(c->down.rev);
    free_event(c->down.wev);
    evutil_closesocket(c->client);
    if (c->upstream >= 0)
        evutil_closesocket(c->upstream);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Sends buf[off:len] to dst. Returns 0 when drained, 1 when bytes are left, -1 on a connection error. */
static int flush(struct direction *d)
{
    while (d->off < d->len) {
        ssize_t n = send(d->dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (would_block())
                return 1;
            return -1;
        }
        d->off += (size_t)n;
    }
    d->off = d->len = 0;
    return 0;
}

/* The source sent EOF: pass it on; once both directions are done, close the connection. */
static void finish(struct direction *d)
{
    struct conn *c = d->conn;
    d->eof = 1;
    event_del(d->rev);
    shutdown(d->dst, SHUT_WR);
    if (c->up.eof && c->down.eof)
        conn_free(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct direction *d = arg;
    (void)fd;
    (void)what;
    switch (flush(d)) {
    case 0:  /* drained: stop watching for writability, resume reading */
        event_del(d->wev);
        event_add(d->rev, NULL);
        break;
    case 1:
        break;
    default:
        conn_free(d->conn);
    }
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct direction *d = arg;
    ssize_t n;
    (void)what;
    n = recv(fd, d->buf, BUF_SIZE, 0);
    if (n < 0) {
        if (!would_block())
            conn_free(d->conn);
        return;
    }
    if (n == 0) {
        finish(d);
        return;
    }
    d->off = 0;
    d->len = (size_t)n;
    switch (flush(d)) {
    case 0:
        break;
    case 1:  /* partial send: pause reads until the rest is out */
        event_del(d->rev);
        event_add(d->wev, NULL);
        break;
    default:
        conn_free(d->conn);
    }
}

static void connected_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    int err = 0;
    socklen_t len = sizeof err;
    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        fprintf(stderr, "forward_raw: connect to upstream: %s\n", evutil_socket_error_to_string(err ? err : errno));
        conn_free(c);
        return;
    }
    if (event_add(c->up.rev, NULL) < 0 || event_add(c->down.rev, NULL) < 0)
        conn_free(c);
}

static int direction_init(struct direction *d, struct conn *c, evutil_socket_t src, evutil_socket_t dst)
{
    d->conn = c;
    d->src = src;
    d->dst = dst;
    d->off = d->len = 0;
    d->eof = 0;
    d->rev = event_new(base, src, EV_READ | EV_PERSIST, read_cb, d);
    d->wev = event_new(base, dst, EV_WRITE | EV_PERSIST, write_cb, d);
    return d->rev && d->wev ? 0 : -1;
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
    c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->client = fd;
    c->upstream = socket(AF_INET, SOCK_STREAM, 0);
    c->prev = NULL;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    if (c->upstream < 0 || evutil_make_socket_nonblocking(c->upstream) < 0) {
        perror("forward_raw: upstream socket");
        conn_free(c);
        return;
    }
    setsockopt(c->upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = event_new(base, c->upstream, EV_WRITE, connected_cb, c);
    if (!c->connecting || direction_init(&c->up, c, c->client, c->upstream) < 0
        || direction_init(&c->down, c, c->upstream, c->client) < 0) {
        conn_free(c);
        return;
    }
    if (connect(c->upstream, (struct sockaddr *)&upstream_addr, sizeof upstream_addr) < 0 && errno != EINPROGRESS) {
        perror("forward_raw: connect to upstream");
        conn_free(c);
        return;
    }
    if (event_add(c->connecting, NULL) < 0)
        conn_free(c);
}

int main(int argc, char **argv)
{
    int port, upstream_port, status;

    prog = "forward_raw";
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT UPSTREAM_PORT\n", argv[0]);
        return 2;
    }
    port = parse_port(argv[1]);
    upstream_port = parse_port(argv[2]);
    if (port < 0 || upstream_port < 0)
        return 2;
    if (new_base())
        return 1;
    memset(&upstream_addr, 0, sizeof upstream_addr);
    upstream_addr.sin_family = AF_INET;
    upstream_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    upstream_addr.sin_port = htons((unsigned short)upstream_port);
    status = serve(port, accept_cb);
    while (conns)
        conn_free(conns);
    event_base_free(base);
    return status;
}
