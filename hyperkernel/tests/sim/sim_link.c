/* sim_link.c - the simulated network (replaces src/link.c).  A frame is
 * encoded by the real codec, queued on the (from, to) link in order, and
 * decoded by the real decoder when the driver delivers it.  Links keep
 * order; which link moves next, and when, is the seed's choice. */
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "sim.h"

static int node_of_link(const struct hk_link *l)
{
	for (int k = 0; k < sim.nodes; k++) {
		struct hk_node *n = sim.node[k].hk;
		if (n && l >= n->links && l < n->links + HK_MAX_NODES)
			return k;
	}
	abort();
}

int hk_link_init(struct hk_link *l, int fd, int peer, const struct hk_shaper *shape,
		 struct hk_stats *st)
{
	(void)shape;
	/* a real fd, so the event loop's epoll set-up works unchanged */
	l->fd = fd >= 0 ? fd : eventfd(0, EFD_CLOEXEC);
	l->peer = peer;
	l->stats = st;
	l->up = true;
	l->health = 100; /* as link.c: healthy until a heartbeat says otherwise */
	return 0;
}

void hk_link_stop(struct hk_link *l)
{
	l->up = false;
}

/* the simulated links deliver frame by frame, at the seed's times */
void hk_link_cork(struct hk_link *l)
{
	(void)l;
}

void hk_link_uncork(struct hk_link *l)
{
	(void)l;
}

void hk_link_push(struct hk_link *l, uint32_t timeout_ms)
{
	(void)l;
	(void)timeout_ms;
}

int hk_link_send(struct hk_link *l, struct hk_msg *m)
{
	int from = node_of_link(l), to = l->peer;
	if (!l->up || !sim.node[to].alive)
		return -ENOTCONN;
	size_t cap = HK_MSG_HDR_LEN + hk_msg_payload_len(m);
	struct sim_frame *f = malloc(sizeof(*f) + cap);
	if (!f)
		abort();
	m->seq = l->seq++;
	f->len = hk_msg_encode(m, f->buf, cap);
	if (!f->len)
		abort();
	/* up to 200 us of wire time, but never overtaking the frame before */
	struct sim_queue *q = &sim.node[from].out[to];
	f->deliver_at = sim.now_ns + 1000 + sim_below(200000);
	if (q->tail && f->deliver_at < q->tail->deliver_at)
		f->deliver_at = q->tail->deliver_at;
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->count++;
	sim.frames_sent++;
	if (l->stats)
		hk_stats_msg(l->stats, true, m->type, f->len);
	return 0;
}

void sim_deliver(int from, int to)
{
	struct sim_queue *q = &sim.node[from].out[to];
	struct sim_frame *f = q->head;
	if (!f)
		return;
	q->head = f->next;
	if (!q->head)
		q->tail = NULL;
	q->count--;
	sim.frames_delivered++;
	struct hk_msg m;
	int c = hk_msg_decode(f->buf, f->len, &m);
	if (c != (int)f->len)
		hk_die("sim: frame from node %d to %d does not decode (%d of %zu bytes)", from, to, c,
		       f->len);
	struct hk_node *n = sim.node[to].hk;
	if (sim.node[to].alive && n->links[from].up) {
		n->links[from].last_rx_ns = sim.now_ns;
		hk_handle_message(n, from, &m, f->len);
	}
	free(f);
}

/* A burst: the frames a recv finds waiting on one link, which the event loop
 * decodes in one batch (loop.c's read_link), so that read copies among them
 * go in as runs (arrivals.c) and the run's flush meets whatever follows. */
void sim_deliver_burst(int from, int to, int max)
{
	struct hk_node *n = sim.node[to].hk;
	n->arrivals.batching = true;
	for (int i = 0; i < max; i++) {
		struct sim_frame *f = sim.node[from].out[to].head;
		if (!f || f->deliver_at > sim.now_ns)
			break;
		sim_deliver(from, to);
	}
	n->arrivals.batching = false;
	if (sim.node[to].alive) {
		hk_arrivals_flush(n);
		hk_drain_local(n);
	}
}
