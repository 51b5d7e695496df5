/*
 * udp-echo-simple: a UDP echo server in C that does the least per datagram: one blocking
 * recvfrom and one sendto back to the sender. A baseline for scripts/vs-reference.sh --udp
 * (two system calls per datagram, whatever the load). Written for this repository.
 *
 *     gcc -O2 -o udp-echo-simple bench/peers/udp-echo-simple.c
 *     ./udp-echo-simple PORT          (0: any free port)
 *
 * Listens on 127.0.0.1:PORT and prints "listening on 127.0.0.1:PORT (udp)" on stderr once it
 * does. SIGTERM or SIGINT: prints "datagrams=N bytes=N" (what it echoed) on stderr, exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT (0-65535; 0: any free port)\n", argv[0]);
        return 2;
    }
    /* No SA_RESTART: the signal makes the blocking recvfrom fail with EINTR. */
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
    fprintf(stderr, "listening on 127.0.0.1:%u (udp)\n", ntohs(addr.sin_port));

    static char buf[65536];
    unsigned long long datagrams = 0, bytes = 0;
    while (!stop) {
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("recvfrom");
            return 1;
        }
        /* A full socket buffer or an unreachable sender loses this one reply: UDP. */
        if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen) == n) {
            datagrams++;
            bytes += (unsigned long long)n;
        }
    }
    fprintf(stderr, "datagrams=%llu bytes=%llu\n", datagrams, bytes);
    return 0;
}
