/* socket.c - addresses and blocking frame I/O on stream sockets: listening
 * and connecting (Unix or TCP), and the helpers the handshake uses before
 * the event thread runs. */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hk.h"

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(addr + 5) >= sizeof(un->sun_path))
			return -ENAMETOOLONG;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, addr + 5);
		*len = sizeof(*un);
		return 0;
	}
	if (!strncmp(addr, "tcp:", 4)) {
		char host[256];
		const char *colon = strrchr(addr + 4, ':');
		if (!colon || (size_t)(colon - addr - 4) >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr + 4, colon - addr - 4);
		host[colon - addr - 4] = 0;
		struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
		if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
			return -EINVAL;
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*len = res->ai_addrlen;
		freeaddrinfo(res);
		return 0;
	}
	return -EINVAL;
}

static void tune_socket(int fd, int family)
{
	int one = 1, buf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int hk_addr_listen(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int r = parse_addr(addr, &ss, &len);
	if (r)
		return r;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, HK_MAX_NODES) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* Peers start in any order: retry until the deadline. */
/* One connection from listen_fd (whose SO_RCVTIMEO bounds the wait), with
 * the mesh's socket buffers; -1 if none came. */
int hk_accept_link(int listen_fd)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -1;
	int buf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	return fd;
}

int hk_addr_connect(const char *addr, uint32_t timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int r = parse_addr(addr, &ss, &len);
	if (r)
		return r;
	uint64_t deadline = hk_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
			tune_socket(fd, ss.ss_family);
			return fd;
		}
		r = -errno;
		close(fd);
		if (hk_now_ns() > deadline)
			return r;
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
}

int hk_fd_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int hk_fd_send_msg(int fd, struct hk_msg *m)
{
	uint8_t buf[HK_MSG_HDR_LEN + 256];
	size_t n = hk_msg_encode(m, buf, sizeof(buf));
	if (!n)
		return -EMSGSIZE;
	return hk_fd_write_all(fd, buf, n);
}

/* Read exactly one frame (handshake only: small frames, blocking, with a
 * deadline so a silent peer cannot hold us). */
int hk_fd_read_msg(int fd, uint8_t *buf, size_t cap, struct hk_msg *m, uint32_t timeout_ms)
{
	size_t have = 0;
	uint64_t deadline = hk_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		int r = hk_msg_decode(buf, have, m);
		if (r < 0 || (r > 0))
			return r;
		if (have == cap)
			return -EMSGSIZE;
		uint64_t now = hk_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
		if (pr < 0 && errno != EINTR)
			return -errno;
		if (pr <= 0)
			continue;
		/* Byte-exact reads: what follows the handshake belongs to the
		 * event thread's buffer. */
		size_t want = have < HK_MSG_HDR_LEN ? HK_MSG_HDR_LEN - have : cap - have;
		if (have >= HK_MSG_HDR_LEN) {
			uint32_t plen = buf[8] | buf[9] << 8 | buf[10] << 16 | (uint32_t)buf[11] << 24;
			if (plen > cap - HK_MSG_HDR_LEN)
				return -EMSGSIZE;
			want = HK_MSG_HDR_LEN + plen - have;
		}
		ssize_t n = recv(fd, buf + have, want, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		have += (size_t)n;
	}
}
