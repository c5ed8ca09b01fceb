/* The receiver of the sendfile benchmark: accepts TCP connections on 127.0.0.1 one at a time, reads
 * each to EOF into a 1 MiB buffer (discarding the bytes), then answers with the byte count as 8 bytes
 * (little-endian) and closes: the sender's clock stops when everything has been read, not when the
 * kernel took it.
 *
 * usage: sink PORT   (0: any free port). Prints "ready PORT" once listening; runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 20];

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)atoi(argv[1]));
    socklen_t len = sizeof(addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(lfd, 16) != 0
            || getsockname(lfd, (struct sockaddr *)&addr, &len) != 0) {
        perror("sink: listen");
        return 1;
    }
    printf("ready %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            perror("sink: accept");
            return 1;
        }
        uint64_t total = 0;
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n > 0) {
                total += (uint64_t)n;
            } else if (n == 0 || errno != EINTR) {
                break;
            }
        }
        unsigned char reply[8];
        for (int i = 0; i < 8; i++)
            reply[i] = (unsigned char)(total >> (8 * i));
        if (send(fd, reply, sizeof(reply), MSG_NOSIGNAL) != sizeof(reply))
            perror("sink: send");
        close(fd);
    }
}
