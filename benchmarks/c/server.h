/*
 * server.h: what the benchmark's C servers share (echo_raw.c, echo_bev.c, echo_pycall.c,
 * forward_raw.c): the event base, the port argument, and a run from "listening" to SIGINT/SIGTERM.
 *
 * Each server is one .c file compiled on its own (cc -O2 FILE.c ...), so this header holds static
 * definitions and is included once, after the system and libevent headers.
 */
#ifndef LEVENT_BENCH_SERVER_H
#define LEVENT_BENCH_SERVER_H

static const char *prog;  /* the server's name, in its messages; set first thing in main() */
static struct event_base *base;

/* errno after a failed recv()/send(): nothing to do until the socket is ready again. */
static inline int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* ARG as a TCP port, or -1 after saying why on stderr. */
static int parse_port(const char *arg)
{
    char *end;
    long port = strtol(arg, &end, 10);
    if (*end || port < 1 || port > 65535) {
        fprintf(stderr, "%s: bad port %s\n", prog, arg);
        return -1;
    }
    return (int)port;
}

/* A new event base in `base`: 0, or 1 after saying why on stderr. */
static int new_base(void)
{
    base = event_base_new();
    if (!base) {
        fprintf(stderr, "%s: event_base_new failed\n", prog);
        return 1;
    }
    return 0;
}

static void accept_error_cb(struct evconnlistener *listener, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    (void)listener;
    (void)arg;
    /* EMFILE and friends: report and keep listening. */
    fprintf(stderr, "%s: accept: %s\n", prog, evutil_socket_error_to_string(err));
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

/* Listens on 127.0.0.1:PORT with ACCEPT_CB, prints "ready" on stdout, and runs `base` until SIGINT or
 * SIGTERM; then frees the listener (the caller frees its connections and the base). Returns 0, or 1
 * when it could not start (the reason is on stderr). */
static int serve(int port, evconnlistener_cb accept_cb)
{
    struct sockaddr_in sin;
    struct evconnlistener *listener;
    struct event *sigint, *sigterm;
    int status = 1;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    listener = evconnlistener_new_bind(base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                       (struct sockaddr *)&sin, sizeof sin);
    if (!listener) {
        fprintf(stderr, "%s: listen: %s\n", prog, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return 1;
    }
    evconnlistener_set_error_cb(listener, accept_error_cb);
    sigint = evsignal_new(base, SIGINT, stop_cb, NULL);
    sigterm = evsignal_new(base, SIGTERM, stop_cb, NULL);
    if (!sigint || !sigterm || event_add(sigint, NULL) < 0 || event_add(sigterm, NULL) < 0) {
        fprintf(stderr, "%s: cannot watch SIGINT/SIGTERM\n", prog);
    } else {
        printf("ready\n");
        fflush(stdout);
        event_base_dispatch(base);
        status = 0;
    }
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    evconnlistener_free(listener);
    return status;
}

#endif
