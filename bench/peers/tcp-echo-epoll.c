/*
 * tcp-echo-epoll: the smallest reasonable epoll TCP echo server in C, as the baseline that
 * scripts/vs-reference.sh measures echo-mux against (requests/s, CPU and system calls per
 * connection). Written for this repository.
 *
 *     gcc -O2 -o tcp-echo-epoll bench/peers/tcp-echo-epoll.c
 *     ./tcp-echo-epoll PORT          (0: any free port)
 *
 * Listens on 127.0.0.1:PORT and prints "listening on 127.0.0.1:PORT" on stderr once it does.
 * One thread, level-triggered epoll, non-blocking sockets, TCP_NODELAY (set once, on the
 * listener). Per readiness event a connection gets one read and the write of what it read;
 * whatever the socket does not take is kept and sent when it becomes writable (reading pauses
 * meanwhile). A connection is closed at EOF or on an error, with a plain close(): the kernel
 * drops the epoll entry of a socket nobody else holds. So a short connection costs accept4,
 * epoll_ctl(ADD), read, write, read (EOF) and close, plus its share of the epoll_wait calls
 * and of the accept4 that finds the queue empty. SIGTERM or SIGINT: prints
 * "connections=N bytes=N" on stderr and exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define BUF_SIZE 65536

/* Output a connection could not send yet, by descriptor number (grown on demand). */
struct pending {
    char *data;
    size_t len;
};
static struct pending *pending;
static size_t npending;

static volatile sig_atomic_t stop;
static unsigned long long connections, bytes;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct pending *pending_of(int fd) {
    if ((size_t)fd >= npending) {
        size_t n = npending ? npending : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        pending = realloc(pending, n * sizeof *pending);
        if (!pending)
            die("realloc");
        memset(pending + npending, 0, (n - npending) * sizeof *pending);
        npending = n;
    }
    return &pending[fd];
}

static void close_conn(int fd) {
    struct pending *p = pending_of(fd);
    free(p->data);
    p->data = NULL;
    p->len = 0;
    close(fd); /* the last reference: epoll forgets it by itself */
}

/* Watch fd for reading, or for writing while output is pending. */
static int watch(int ep, int fd, int op, int writing) {
    struct epoll_event ev = {.events = writing ? EPOLLOUT : EPOLLIN, .data.fd = fd};
    return epoll_ctl(ep, op, fd, &ev);
}

/* Send data (len bytes); keep what the socket refuses. 0 on success, -1 to close. */
static int send_or_keep(int ep, int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pending *p = pending_of(fd);
            char *copy = malloc(len);
            if (!copy)
                return -1;
            memcpy(copy, data, len);
            free(p->data);
            p->data = copy;
            p->len = len;
            return watch(ep, fd, EPOLL_CTL_MOD, 1);
        }
        return -1;
    }
    return 0;
}

static void on_readable(int ep, int fd, char *buf) {
    ssize_t n = read(fd, buf, BUF_SIZE);
    if (n > 0) {
        bytes += (unsigned long long)n;
        if (send_or_keep(ep, fd, buf, (size_t)n) < 0)
            close_conn(fd);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_conn(fd);
    }
}

static void on_writable(int ep, int fd) {
    struct pending *p = pending_of(fd);
    char *data = p->data;
    size_t len = p->len;
    p->data = NULL;
    p->len = 0;
    int rc = send_or_keep(ep, fd, data, len);
    free(data);
    if (rc < 0)
        close_conn(fd);
    else if (p->len == 0 && watch(ep, fd, EPOLL_CTL_MOD, 0) < 0)
        close_conn(fd);
}

static void accept_all(int ep, int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN: the queue is empty; anything else: try again next time */
        connections++;
        if (watch(ep, fd, EPOLL_CTL_ADD, 0) < 0)
            close(fd);
    }
}

int main(int argc, char **argv) {
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT (0-65535; 0: any free port)\n", argv[0]);
        return 2;
    }

    /* No SA_RESTART: the signal interrupts epoll_wait, and the loop sees `stop`. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* No Nagle delay on replies, as echo-mux; Linux copies this to every accepted socket. */
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    getsockname(lfd, (struct sockaddr *)&addr, &alen);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    if (watch(ep, lfd, EPOLL_CTL_ADD, 0) < 0)
        die("epoll_ctl");
    fprintf(stderr, "listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));

    static char buf[BUF_SIZE];
    struct epoll_event events[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd)
                accept_all(ep, lfd);
            else if (pending_of(fd)->len > 0)
                on_writable(ep, fd); /* registered for EPOLLOUT (or failed: write says) */
            else
                on_readable(ep, fd, buf);
        }
    }
    fprintf(stderr, "connections=%llu bytes=%llu\n", connections, bytes);
    return 0;
}
