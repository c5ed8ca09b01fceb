/*
 * echo_bev: libevent's classic bufferevent echo server.
 *
 *     echo_bev PORT
 *
 * Listens on 127.0.0.1:PORT (an evconnlistener), prints "ready" on stdout once listening, and exits
 * with status 0 on SIGINT or SIGTERM after freeing every connection.
 *
 * Per connection: bufferevent_socket_new(); the read callback moves the whole input evbuffer to the
 * output evbuffer with evbuffer_add_buffer() (no copy: the chains move), and the bufferevent writes it
 * out when the socket is writable. This is the code a C libevent user writes first, so it is the
 * reference for what a bufferevent-based Python API costs beyond C.
 *
 * libevent's defaults apply, as in libevent's own sample: reading is not paused while output is queued
 * (no watermarks), and in libevent 2.1 a bufferevent reads at most 4096 bytes per read callback
 * (evbuffer_read caps every read at EVBUFFER_MAX_READ = 4096, below max_single_read's 16 KiB; 2.2
 * makes it settable), so a 100 KiB message costs ~25 readv + ioctl(FIONREAD) + writev calls where
 * echo_raw needs ~2 recv + send. Accepted sockets are non-blocking (evconnlistener's default) and get
 * TCP_NODELAY, as asyncio's transports do. SIGPIPE is ignored (bufferevents write with writev, which
 * has no MSG_NOSIGNAL; CPython ignores SIGPIPE too), so a peer that resets is only a closed connection.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "server.h"

struct conn {
    struct bufferevent *bev;
    struct conn *prev, *next;  /* every open connection, so that exit frees them all */
};

static struct conn *conns;

static void conn_free(struct conn *c)
{
    bufferevent_free(c->bev);  /* BEV_OPT_CLOSE_ON_FREE closes the socket */
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
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
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0) {
        bufferevent_free(c->bev);
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

    prog = "echo_bev";
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
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
