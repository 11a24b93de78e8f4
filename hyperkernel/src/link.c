/* link.c - the links of the mesh: stream sockets carrying framed messages.
 * The event thread sends directly when the socket has room (no hand-off on
 * the latency path); otherwise, or when the link is shaped, the frame goes to
 * the link's sender thread, so the event thread never blocks on a full socket
 * (two event threads blocked on each other's full sockets would deadlock the
 * mesh).  The simulation (tests/sim) replaces this file. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "hk.h"

static int link_flush_locked(struct hk_link *l);

static void *sender_main(void *arg)
{
	struct hk_link *l = arg;
	pthread_mutex_lock(&l->lock);
	for (;;) {
		while (!l->head && !l->stopping)
			pthread_cond_wait(&l->cond, &l->lock);
		if (l->stopping && !l->head)
			break;
		struct hk_outq_item *it = l->head;
		uint64_t now = hk_now_ns();
		if (it->release_ns > now) {
			pthread_mutex_unlock(&l->lock);
			struct timespec ts = { (time_t)((it->release_ns - now) / 1000000000ull),
					       (long)((it->release_ns - now) % 1000000000ull) };
			nanosleep(&ts, NULL);
			pthread_mutex_lock(&l->lock);
			continue;
		}
		/* Write outside the lock; only this thread removes items, and
		 * direct sends are not attempted while the queue is non-empty. */
		pthread_mutex_unlock(&l->lock);
		int r = hk_fd_write_all(l->fd, it->buf + it->off, it->len - it->off);
		pthread_mutex_lock(&l->lock);
		l->head = it->next;
		if (!l->head)
			l->tail = NULL;
		free(it);
		if (r < 0) {
			/* The receive side sees the EOF and declares the peer dead. */
			while ((it = l->head)) {
				l->head = it->next;
				free(it);
			}
			l->tail = NULL;
			l->stopping = true;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* The link is locked: wait, at most timeout_ms, until the sender thread has
 * written (or, on a write error, dropped) every queued frame. */
static void wait_sent_locked(struct hk_link *l, uint32_t timeout_ms)
{
	uint64_t deadline = hk_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (l->head && hk_now_ns() < deadline) {
		pthread_mutex_unlock(&l->lock);
		usleep(1000);
		pthread_mutex_lock(&l->lock);
	}
}

int hk_link_init(struct hk_link *l, int fd, int peer, const struct hk_shaper *shape,
		 struct hk_stats *st)
{
	l->fd = fd;
	l->peer = peer;
	l->bye = false;
	l->health = 100; /* until its first heartbeat says otherwise */
	l->head = l->tail = NULL;
	l->stopping = false;
	l->shaper = *shape;
	l->stats = st;
	l->seq = 0;
	l->rcap = 2 * (HK_MSG_HDR_LEN + HK_MSG_MAX_PAYLOAD);
	l->rbuf = malloc(l->rcap);
	l->rlen = 0;
	l->last_rx_ns = hk_now_ns();
	if (!l->rbuf)
		return -ENOMEM;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	if (pthread_create(&l->sender, NULL, sender_main, l) != 0)
		return -EAGAIN;
	l->sender_started = true;
	/* up last: a node that joins gets its link while other threads send */
	__atomic_store_n(&l->up, true, __ATOMIC_RELEASE);
	return 0;
}

void hk_link_stop(struct hk_link *l)
{
	if (!l->sender_started)
		return;
	pthread_mutex_lock(&l->lock);
	l->corked = false;
	link_flush_locked(l); /* held frames go first */
	l->stopping = true;
	pthread_cond_signal(&l->cond);
	/* What is queued goes out first (a node that leaves queues its last
	 * directory entries, MOVED and BYE behind its pages): a peer that
	 * reads on gets it all; one that stopped reading holds us 5 s at most. */
	wait_sent_locked(l, 5000);
	pthread_mutex_unlock(&l->lock);
	/* Unblock a sender stuck in send() to a peer that stopped reading. */
	shutdown(l->fd, SHUT_WR);
	pthread_join(l->sender, NULL);
	l->sender_started = false;
	free(l->rbuf);
	l->rbuf = NULL;
	free(l->cork);
	l->cork = NULL;
	l->cork_len = 0;
	l->corked = false;
}

/*
 * Writes bytes made of `n` parts; the link is locked. They go straight to
 * the socket when nothing is queued and the link is not shaped; whatever
 * the socket does not take is copied to the sender thread's queue, so the
 * caller may reuse its buffers at once.
 */
static int link_write_locked(struct hk_link *l, const struct iovec *parts, int n, size_t total)
{
	size_t off = 0;
	uint64_t release = 0;
	if (hk_shaper_active(&l->shaper))
		release = hk_shaper_release_ns(&l->shaper, hk_now_ns(), total);
	else if (!l->head) {
		while (off < total) {
			struct iovec iov[4];
			int niov = 0;
			size_t skip = off;
			for (int i = 0; i < n && niov < 4; i++) {
				if (skip >= parts[i].iov_len) {
					skip -= parts[i].iov_len;
					continue;
				}
				iov[niov++] = (struct iovec){ (uint8_t *)parts[i].iov_base + skip,
							      parts[i].iov_len - skip };
				skip = 0;
			}
			struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
			ssize_t w = sendmsg(l->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN)
					return -errno;
				break;
			}
			off += (size_t)w;
		}
	}
	if (off < total) {
		struct hk_outq_item *it = malloc(sizeof(*it) + total);
		if (!it)
			return -ENOMEM;
		size_t at = 0;
		for (int i = 0; i < n; i++) {
			memcpy(it->buf + at, parts[i].iov_base, parts[i].iov_len);
			at += parts[i].iov_len;
		}
		it->len = total;
		it->off = off;
		it->release_ns = release;
		it->next = NULL;
		if (l->tail)
			l->tail->next = it;
		else
			l->head = it;
		l->tail = it;
		pthread_cond_signal(&l->cond);
	}
	return 0;
}

/* What a batch of events sends on one link is, in a stream of faults or
 * read-ahead, a dozen or more frames: one write for all of them instead of
 * a sendmsg() each (on loopback TCP each write also runs the receiver's
 * protocol stack on the sender's CPU).  A corked frame is copied (a page
 * the holder sends may be dropped later in the same batch). */
#define HK_CORK_MAX (256u * 1024u)

static int link_flush_locked(struct hk_link *l)
{
	if (!l->cork_len)
		return 0;
	struct iovec part = { l->cork, l->cork_len };
	size_t len = l->cork_len;
	l->cork_len = 0;
	return link_write_locked(l, &part, 1, len);
}

/* One frame of `n` parts; the link is locked. */
static int link_emit_locked(struct hk_link *l, const struct iovec *parts, int n, size_t total,
			    uint8_t type)
{
	int r = 0;
	/* (another thread's frame, e.g. a vCPU's state or QMP's shutdown,
	 * must not wait for the event thread's batch: its sender may exit) */
	if (l->corked && l->cork && total <= HK_CORK_MAX && pthread_equal(l->corker, pthread_self())) {
		if (l->cork_len + total > HK_CORK_MAX)
			r = link_flush_locked(l);
		for (int i = 0; i < n && r == 0; i++) {
			memcpy(l->cork + l->cork_len, parts[i].iov_base, parts[i].iov_len);
			l->cork_len += parts[i].iov_len;
		}
	} else {
		r = link_flush_locked(l); /* in order */
		if (r == 0)
			r = link_write_locked(l, parts, n, total);
	}
	if (r == 0 && l->stats)
		hk_stats_msg(l->stats, true, type, total);
	return r;
}

void hk_link_cork(struct hk_link *l)
{
	pthread_mutex_lock(&l->lock);
	if (!l->cork)
		l->cork = malloc(HK_CORK_MAX);
	/* a shaped link times each frame itself */
	l->corked = l->cork && !l->stopping && !hk_shaper_active(&l->shaper);
	l->corker = pthread_self();
	pthread_mutex_unlock(&l->lock);
}

void hk_link_uncork(struct hk_link *l)
{
	pthread_mutex_lock(&l->lock);
	l->corked = false;
	if (!l->stopping && link_flush_locked(l) < 0)
		l->stopping = true; /* as the sender does: the reader sees the EOF */
	l->cork_len = 0;
	pthread_mutex_unlock(&l->lock);
}

/* Uncork, then wait (at most timeout_ms) until every queued frame is in the
 * socket: past that point the kernel delivers it even if this process ends,
 * which a node that is about to exit needs for its last words. */
void hk_link_push(struct hk_link *l, uint32_t timeout_ms)
{
	hk_link_uncork(l);
	pthread_mutex_lock(&l->lock);
	wait_sent_locked(l, timeout_ms);
	pthread_mutex_unlock(&l->lock);
}

/* DATA: the page goes out by sendmsg() straight from where it is (guest
 * memory or a local buffer), after a 28-byte head, without being copied
 * into a frame buffer first.  The caller keeps the page stable until we
 * return (the holder has write-protected it); what the socket does not take
 * now is copied into the queue before we return. */
static int link_send_data(struct hk_link *l, struct hk_msg *m)
{
	/* The head of a DATA frame is that of any page message (page, node,
	 * mode, aux): encode it as one, then fix type and payload length. */
	uint8_t head[HK_MSG_HDR_LEN + 12];
	struct hk_msg h = *m;
	h.type = HK_MSG_FWD;
	h.data = NULL;
	h.data_len = 0;
	size_t total = HK_MSG_HDR_LEN + 12 + HK_PAGE_SIZE;
	int r = 0;
	pthread_mutex_lock(&l->lock);
	if (l->stopping) {
		r = -EPIPE;
		goto out;
	}
	h.seq = m->seq = ++l->seq;
	if (hk_msg_encode(&h, head, sizeof(head)) != sizeof(head)) {
		r = -EMSGSIZE;
		goto out;
	}
	head[6] = HK_MSG_DATA;
	uint32_t plen = 12 + HK_PAGE_SIZE;
	head[8] = (uint8_t)plen;
	head[9] = (uint8_t)(plen >> 8);
	head[10] = (uint8_t)(plen >> 16);
	head[11] = (uint8_t)(plen >> 24);
	struct iovec parts[2] = { { head, sizeof(head) }, { (void *)m->data, HK_PAGE_SIZE } };
	r = link_emit_locked(l, parts, 2, total, m->type);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

int hk_link_send(struct hk_link *l, struct hk_msg *m)
{
	if (m->type == HK_MSG_DATA && m->data)
		return link_send_data(l, m);
	uint8_t stackbuf[HK_MSG_HDR_LEN + 16 + HK_PAGE_SIZE];
	size_t plen = hk_msg_payload_len(m);
	size_t total = HK_MSG_HDR_LEN + plen;
	uint8_t *buf = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	pthread_mutex_lock(&l->lock);
	if (l->stopping) {
		r = -EPIPE;
		goto out;
	}
	m->seq = ++l->seq;
	hk_msg_encode(m, buf, total);
	struct iovec part = { buf, total };
	r = link_emit_locked(l, &part, 1, total, m->type);
out:
	pthread_mutex_unlock(&l->lock);
	if (buf != stackbuf)
		free(buf);
	return r;
}
