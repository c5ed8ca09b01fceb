/*
 * loadgen: a closed-loop TCP echo load generator, cheap enough not to be the bottleneck.
 *
 *     loadgen PORT CONNS SIZE SECONDS [WARMUP_SECONDS]
 *
 * Opens CONNS connections to 127.0.0.1:PORT (TCP_NODELAY), then each connection keeps exactly one
 * message of SIZE bytes in flight: send SIZE bytes, wait until all SIZE echoed bytes are back, check
 * every byte against what was sent, send the next. One thread, epoll (level-triggered), non-blocking
 * sockets; the only per-byte work is one memcmp of what arrives.
 *
 * Messages are windows into one pool of pseudo-random bytes, at an offset that changes with every
 * message and connection (offset = (conn * 2654435761 + seq * 40503) mod 4096), so each message's
 * bytes differ from the previous one's: an echo that is stale, reordered, duplicated or from another
 * connection is caught, and building a message costs nothing.
 *
 * After WARMUP_SECONDS (default 0.5) of unmeasured traffic it prints "start" on stdout, measures for
 * SECONDS, prints "end" the moment the window closes (so a caller can sample the server's CPU time
 * at both lines), then one JSON line:
 *
 *     {"messages": n, "bytes": b, "seconds": s, "p50_us": .., "p99_us": .., "errors": 0, ...}
 *
 * messages: echoes completed inside the window; bytes: messages * SIZE (one direction); seconds: the
 * window's length on CLOCK_MONOTONIC; p50_us/p99_us: latency of those echoes, from just before the
 * first send() of a message to the recv() that completed it (nearest rank); extra fields: conns,
 * size, warmup, loadgen_cpu_s (this process's user+system CPU inside the window).
 *
 * Built with -DLOADGEN_TLS (and OpenSSL's flags) it is the TLS load generator (loadgen_tls): each
 * connection does a TLS handshake (blocking, before the first message; the server's certificate is
 * not verified: this measures the server, on loopback) and the messages go through SSL_write and
 * SSL_read; the figures mean the same (SIZE plaintext bytes per message).
 *
 * Exit status: 0 on success; 2 on a connection error (refused, reset, closed by the server, ...);
 * 3 on an echoed byte that differs from the one sent; 4 if no echo completed in the window; 1 on bad
 * usage. The process bounds itself with alarm(WARMUP + SECONDS + 30).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>
#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define POOL_SLACK 4096     /* message offsets are in [0, POOL_SLACK) */
#define SCRATCH_SIZE (256 * 1024)
#define MAX_EVENTS 256

struct conn {
    int fd;
    int index;
    uint32_t events;     /* what epoll currently watches */
    uint64_t seq;        /* number of the message in flight */
    const unsigned char *msg;  /* the message in flight: pool + offset */
    size_t sent, received;
    uint64_t t0;         /* ns, just before the message's first send() */
#ifdef LOADGEN_TLS
    SSL *ssl;
#endif
};

static size_t size;
static unsigned char *pool;
static unsigned char scratch[SCRATCH_SIZE];
static int epfd;

static int measuring;
static uint64_t messages;
static uint64_t *lat;  /* ns, one per echo completed in the window */
static size_t nlat, caplat;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die_conn(struct conn *c, const char *what, int err)
{
    fprintf(stderr, "loadgen: connection %d, message %llu: %s%s%s\n", c->index, (unsigned long long)c->seq, what,
            err ? ": " : "", err ? strerror(err) : "");
    exit(2);
}

static void watch(struct conn *c, uint32_t events)
{
    struct epoll_event ev;
    if (c->events == events)
        return;
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die_conn(c, "epoll_ctl", errno);
    c->events = events;
}

#ifdef LOADGEN_TLS
/* Exit 3 for a record that fails to decrypt or verify (corrupted), else 2 (connection error). */
static void die_tls(struct conn *c, const char *what, int ret)
{
    int err = SSL_get_error(c->ssl, ret);
    unsigned long e = ERR_get_error();
    fprintf(stderr, "loadgen: connection %d, message %llu: %s: SSL error %d%s%s\n", c->index,
            (unsigned long long)c->seq, what, err, e ? ": " : "", e ? ERR_error_string(e, NULL) : "");
    exit(err == SSL_ERROR_SSL && SSL_is_init_finished(c->ssl) ? 3 : 2);
}

/* send() and recv() through the connection's TLS session: -1 with errno EAGAIN when it would block
 * (either way: TLS 1.3 may read while writing), dies on anything else. */
static ssize_t io_send(struct conn *c, const void *buf, size_t len)
{
    int n = SSL_write(c->ssl, buf, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    default:
        die_tls(c, "SSL_write", n);
        return -1;
    }
}

static ssize_t io_recv(struct conn *c, void *buf, size_t len)
{
    int n = SSL_read(c->ssl, buf, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        die_tls(c, "SSL_read", n);
        return -1;
    }
}
#else
static ssize_t io_send(struct conn *c, const void *buf, size_t len)
{
    return send(c->fd, buf, len, MSG_NOSIGNAL);
}

static ssize_t io_recv(struct conn *c, void *buf, size_t len)
{
    return recv(c->fd, buf, len, 0);
}
#endif

/* Sends what is left of the message; watches EPOLLOUT only while some of it is unsent. */
static void push(struct conn *c)
{
    while (c->sent < size) {
        size_t want = size - c->sent;
        ssize_t n = io_send(c, c->msg + c->sent, want);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            die_conn(c, "send", errno);
        }
        c->sent += (size_t)n;
        if ((size_t)n < want)
            break;  /* the socket buffer is full: wait for EPOLLOUT */
    }
    watch(c, c->sent < size ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void start_message(struct conn *c)
{
    size_t off = (size_t)(((uint64_t)c->index * 2654435761u + c->seq * 40503u) % POOL_SLACK);
    c->msg = pool + off;
    c->sent = c->received = 0;
    c->t0 = now_ns();
    push(c);
}

static void record(uint64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
    }
    lat[nlat++] = ns;
}

static void pull(struct conn *c)
{
    for (;;) {
        size_t want = size - c->received;
        ssize_t n;
        if (want > SCRATCH_SIZE)
            want = SCRATCH_SIZE;
        n = io_recv(c, scratch, want);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            die_conn(c, "recv", errno);
        }
        if (n == 0)
            die_conn(c, "the server closed the connection", 0);
        if (c->received + (size_t)n > c->sent)
            die_conn(c, "received more bytes than were sent", 0);
        if (memcmp(scratch, c->msg + c->received, (size_t)n) != 0) {
            size_t i = 0;
            while (scratch[i] == c->msg[c->received + i])
                i++;
            fprintf(stderr, "loadgen: connection %d, message %llu: byte %zu is 0x%02x, sent 0x%02x\n", c->index,
                    (unsigned long long)c->seq, c->received + i, scratch[i], c->msg[c->received + i]);
            exit(3);
        }
        c->received += (size_t)n;
        if (c->received == size) {
            if (measuring) {
                messages++;
                record(now_ns() - c->t0);
            }
            c->seq++;
            start_message(c);
            return;
        }
#ifndef LOADGEN_TLS
        /* Most likely drained; level-triggered epoll reports the rest. (Not with TLS: what the
         * session already decrypted does not make the socket readable.) */
        if ((size_t)n < want)
            return;
#endif
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(double p)
{
    size_t rank = (size_t)ceil(p * (double)nlat);
    if (rank < 1)
        rank = 1;
    return lat[rank - 1] / 1000.0;
}

static double parse_positive(const char *s, const char *name)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v >= 0)) {
        fprintf(stderr, "loadgen: bad %s: %s\n", name, s);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    struct epoll_event evs[MAX_EVENTS];
    struct conn *conns;
    double duration, warmup = 0.5, cpu0 = 0, cpu1;
    uint64_t t, warm_end, win_start = 0, win_end = 0, x;
    long port, nconns;
    size_t i;
    int one = 1;
#ifdef LOADGEN_TLS
    SSL_CTX *tls = SSL_CTX_new(TLS_client_method());
    if (!tls) {
        fprintf(stderr, "loadgen: SSL_CTX_new failed\n");
        return 1;
    }
    SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL);
    /* SSL_write may send part of a message, and is retried from where it stopped */
    SSL_CTX_set_mode(tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#endif

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s PORT CONNS SIZE SECONDS [WARMUP_SECONDS]\n", argv[0]);
        return 1;
    }
    port = (long)parse_positive(argv[1], "port");
    nconns = (long)parse_positive(argv[2], "connection count");
    size = (size_t)parse_positive(argv[3], "size");
    duration = parse_positive(argv[4], "duration");
    if (argc == 6)
        warmup = parse_positive(argv[5], "warm-up");
    if (port < 1 || port > 65535 || nconns < 1 || size < 1 || duration <= 0) {
        fprintf(stderr, "loadgen: need 1 <= PORT <= 65535, CONNS >= 1, SIZE >= 1, SECONDS > 0\n");
        return 1;
    }
    alarm((unsigned)(warmup + duration) + 30);

    pool = malloc(size + POOL_SLACK);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!pool || !conns) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    x = 0x9E3779B97F4A7C15u;  /* xorshift64: fixed seed, the bytes only need to vary */
    for (i = 0; i < size + POOL_SLACK; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pool[i] = (unsigned char)(x >> 24);
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("loadgen: epoll_create1");
        return 1;
    }
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    for (i = 0; i < (size_t)nconns; i++) {
        struct conn *c = &conns[i];
        struct epoll_event ev;
        c->index = (int)i;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            die_conn(c, "socket", errno);
        /* A blocking connect: on loopback it completes as soon as the kernel has the handshake. */
        if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die_conn(c, "connect", errno);
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef LOADGEN_TLS
        c->ssl = SSL_new(tls);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
            die_conn(c, "SSL_new", 0);
        {
            int ret = SSL_connect(c->ssl);   /* blocking, like connect() above */
            if (ret != 1)
                die_tls(c, "SSL_connect", ret);
        }
#endif
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        ev.events = c->events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die_conn(c, "epoll_ctl", errno);
    }

    t = now_ns();
    warm_end = t + (uint64_t)(warmup * 1e9);
    for (i = 0; i < (size_t)nconns; i++)
        start_message(&conns[i]);

    for (;;) {
        uint64_t deadline;
        int n, k, timeout_ms;
        t = now_ns();
        if (!measuring && t >= warm_end) {
            measuring = 1;
            win_start = t;
            win_end = t + (uint64_t)(duration * 1e9);
            cpu0 = cpu_seconds();
            printf("start\n");
            fflush(stdout);
        }
        if (measuring && t >= win_end)
            break;
        deadline = measuring ? win_end : warm_end;
        timeout_ms = (int)((deadline - t + 999999) / 1000000);
        n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            return 2;
        }
        for (k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            uint32_t e = evs[k].events;
            if (e & EPOLLERR) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                die_conn(c, "socket error", err);
            }
            if (e & EPOLLOUT)
                push(c);
            if (e & (EPOLLIN | EPOLLHUP))
                pull(c);
        }
    }
    t = now_ns();
    cpu1 = cpu_seconds();
    printf("end\n");
    fflush(stdout);

    for (i = 0; i < (size_t)nconns; i++) {
#ifdef LOADGEN_TLS
        SSL_shutdown(conns[i].ssl);   /* sends close_notify; the server's answer is not awaited */
        SSL_free(conns[i].ssl);
#endif
        close(conns[i].fd);
    }
    if (!messages) {
        fprintf(stderr, "loadgen: no echo completed in %.3f s\n", (t - win_start) / 1e9);
        return 4;
    }
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("{\"messages\": %llu, \"bytes\": %llu, \"seconds\": %.6f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
           "\"errors\": 0, \"conns\": %ld, \"size\": %zu, \"warmup\": %g, \"loadgen_cpu_s\": %.6f}\n",
           (unsigned long long)messages, (unsigned long long)(messages * size), (t - win_start) / 1e9,
           percentile_us(0.50), percentile_us(0.99), nconns, size, warmup, cpu1 - cpu0);
    fflush(stdout);
    free(lat);
    free(conns);
    free(pool);
    return 0;
}
