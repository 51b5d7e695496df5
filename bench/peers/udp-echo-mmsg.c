/*
 * udp-echo-mmsg: a batching UDP echo server in C: recvmmsg takes up to BATCH datagrams in one
 * system call, sendmmsg returns them all to their senders in one more. The baseline for
 * echo-mux's batched UDP path in scripts/vs-reference.sh --udp and for the bench tests
 * (bench/tests/). Written for this repository.
 *
 *     gcc -O2 -o udp-echo-mmsg bench/peers/udp-echo-mmsg.c
 *     ./udp-echo-mmsg PORT [BATCH]     (PORT 0: any free port; BATCH 1-1024, default 64)
 *
 * Listens on 127.0.0.1:PORT and prints "listening on 127.0.0.1:PORT (udp)" on stderr once it
 * does. The socket blocks: recvmmsg with MSG_WAITFORONE sleeps until one datagram is there,
 * then takes whatever else is queued (up to BATCH) without waiting for more. So a lone
 * sender costs two system calls per datagram and a busy socket much less than one.
 * SIGTERM or SIGINT: prints "datagrams=N bytes=N batches=N" (what it echoed, and in how
 * many recvmmsg calls) on stderr and exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define DGRAM_MAX 65536

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* Reads a whole number from lo to hi, or exits with the usage line. */
static long number(const char *s, long lo, long hi, const char *prog) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "usage: %s PORT [BATCH] (PORT 0-65535, 0: any free port; BATCH 1-%d)\n",
                prog, MAX_BATCH);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3)
        number("", 0, 0, argv[0]);
    long port = number(argv[1], 0, 65535, argv[0]);
    unsigned batch = argc == 3 ? (unsigned)number(argv[2], 1, MAX_BATCH, argv[0]) : 64;

    /* No SA_RESTART: the signal makes the blocking recvmmsg fail with EINTR. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("bind");
        return 1;
    }
    getsockname(fd, (struct sockaddr *)&addr, &alen);

    /* One buffer, one source address and one header per slot of the batch. */
    char *bufs = malloc((size_t)batch * DGRAM_MAX);
    struct sockaddr_storage *from = calloc(batch, sizeof *from);
    struct iovec *iov = calloc(batch, sizeof *iov);
    struct mmsghdr *msgs = calloc(batch, sizeof *msgs);
    if (!bufs || !from || !iov || !msgs) {
        perror("malloc");
        return 1;
    }
    fprintf(stderr, "listening on 127.0.0.1:%u (udp)\n", ntohs(addr.sin_port));

    unsigned long long datagrams = 0, bytes = 0, batches = 0;
    while (!stop) {
        /* recvmmsg overwrites lengths: set every slot up again before each call. */
        for (unsigned i = 0; i < batch; i++) {
            iov[i].iov_base = bufs + (size_t)i * DGRAM_MAX;
            iov[i].iov_len = DGRAM_MAX;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(fd, msgs, batch, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("recvmmsg");
            return 1;
        }
        batches++;
        /* Send each datagram back as it came: its length, to its source address. */
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msgs[i].msg_len;
        int sent = 0;
        while (sent < n) {
            int k = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                sent++; /* this datagram cannot go (its sender is gone?): skip it, UDP */
                continue;
            }
            for (int i = sent; i < sent + k; i++) {
                datagrams++;
                bytes += msgs[i].msg_len;
            }
            sent += k;
        }
    }
    fprintf(stderr, "datagrams=%llu bytes=%llu batches=%llu\n", datagrams, bytes, batches);
    return 0;
}
