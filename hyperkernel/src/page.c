/* page.c - what every role of the page protocol shares: sending to a node
 * (ourselves included, through the local queue, so every role runs the same
 * code whatever mix of home, owner and requester a node is), the resident
 * count, the embedder's arrival/departure callbacks and the invariants. */
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "hk.h"

#define WRITER_WINDOW 16

int hk_home_of(struct hk_node *n, uint64_t page)
{
	uint32_t chunk = n->cfg.home_chunk_pages ? n->cfg.home_chunk_pages : 1;
	if (n->home_map && page / chunk < n->nchunks)
		return n->home_map[page / chunk];
	return hk_directory_home(page, chunk, n->initial);
}

int hk_node_send(struct hk_node *n, int to, struct hk_msg *m)
{
	m->version = HK_PROTOCOL_VERSION;
	if (hk_evac_hold_outgoing(n, to, m))
		return 0;
	if (to == n->self) {
		struct hk_local_msg *lm = malloc(sizeof(*lm));
		if (!lm)
			hk_die("out of memory queueing a local message");
		lm->m = *m;
		lm->next = NULL;
		if (m->data) {
			memcpy(lm->data, m->data, HK_PAGE_SIZE);
			lm->m.data = lm->data;
		}
		if (n->lq_tail)
			n->lq_tail->next = lm;
		else
			n->lq_head = lm;
		n->lq_tail = lm;
		return 0;
	}
	struct hk_link *l = &n->links[to];
	if (!l->up)
		return -ENOTCONN;
	return hk_link_send(l, m);
}

void hk_send_page(struct hk_node *n, int to, unsigned type, uint64_t page, int node,
			  uint8_t mode, uint8_t aux, const void *data)
{
	struct hk_msg m = { .type = (uint8_t)type, .page = page, .node = (uint32_t)node,
			    .mode = mode, .aux = aux, .data = data,
			    .data_len = data ? HK_PAGE_SIZE : 0 };
	int r = hk_node_send(n, to, &m);
	if (r < 0 && !atomic_load(&n->failed))
		hk_warn("send %s for page %lu to node %d: %s", hk_msg_type_name(type), page, to,
			strerror(-r));
}

void hk_page_arrived(struct hk_node *n, uint64_t page, int from)
{
	n->resident++;
	if (n->resident > n->peak_resident)
		n->peak_resident = n->resident;
	struct hk_page *p = &n->pages[page];
	p->last_use = (uint32_t)++n->clock;
	p->hint = (int8_t)from;
	/* policy history: back within 100 ms of leaving is a bounce (two nodes
	 * taking the page in turn); otherwise the count decays.  Signed: back
	 * within the millisecond it left, left_ms (rounded up to odd, so never
	 * 0) can be 1 ms ahead, and the fastest bounces (pingpong's word) once
	 * counted as 49 days away, halving the count on every round. */
	uint32_t now_ms = (uint32_t)(hk_now_ns() / 1000000);
	/* A copy asked for ahead (read-ahead, refetch: requester.c) that no
	 * thread waited for counts neither way: it came because another page
	 * was read.  Counted, refetched copies lost and asked for again every
	 * few hundred ms made pages "bounce" 32 times, and learned swapped
	 * vCPUs away from their guest NUMA node's memory (redis, smc, sweep
	 * 3-12x slower in one boot). */
	if (p->ahead)
		;
	else if (from != n->self && p->left_ms && (int32_t)(now_ms - p->left_ms) < 100)
		p->bounces = p->bounces < 255 ? p->bounces + 1 : 255;
	else
		p->bounces /= 2;
	/* Who writes it here is remembered over two windows of arrivals, so a
	 * vCPU that wrote it once (a program's main thread setting up the
	 * word two others then hand back and forth) is forgotten, while
	 * vCPUs that keep writing it stay known. */
	if (!p->bounces) {
		p->writers = p->writers_before = 0;
		p->arrivals = 0;
	} else if (++p->arrivals >= WRITER_WINDOW) {
		p->writers_before = p->writers;
		p->writers = 0;
		p->arrivals = 0;
	}
	if (n->cfg.cb.on_page_arrived)
		n->cfg.cb.on_page_arrived(n->cfg.cb.opaque, page * HK_PAGE_SIZE);
}

bool hk_page_left(struct hk_node *n, uint64_t page)
{
	n->pages[page].left_ms = (uint32_t)(hk_now_ns() / 1000000) | 1;
	if (n->pages[page].zmap) {
		n->pages[page].zmap = false; /* premapped, never counted */
	} else {
		n->resident--;
		n->room_freed = true;
	}
	hk_evac_page_left(n, page);
	if (n->cfg.cb.on_page_left &&
	    n->cfg.cb.on_page_left(n->cfg.cb.opaque, page * HK_PAGE_SIZE) == HK_DEFER) {
		n->stats.node.deferred_acks++;
		return true;
	}
	return false;
}

/* The acknowledgement that a page left (INV_ACK, XFER_DROPPED): now, or once
 * the embedder says the page's translations are gone. */
void hk_page_ack(struct hk_node *n, uint64_t page, bool deferred, int to, unsigned type)
{
	struct hk_page *p = &n->pages[page];
	if (!deferred) {
		hk_send_page(n, to, type, page, n->self, 0, 0, NULL);
		return;
	}
	p->ack_type = (uint8_t)type;
	p->ack_to = (int8_t)to;
	p->t_left = hk_now_ns();
	p->ack_mode = 0;
	p->ack_aux = 0;
}

int hk_page_left_done(struct hk_node *n, uint64_t offset)
{
	if (!n || offset / HK_PAGE_SIZE >= n->mem.npages)
		return -EINVAL;
	pthread_mutex_lock(&n->deferred_lock);
	if (n->ndeferred == n->cap_deferred) {
		size_t cap = n->cap_deferred ? 2 * n->cap_deferred : 64;
		uint64_t *d = realloc(n->deferred, cap * sizeof(*d));
		if (!d) {
			pthread_mutex_unlock(&n->deferred_lock);
			return -ENOMEM;
		}
		n->deferred = d;
		n->cap_deferred = cap;
	}
	n->deferred[n->ndeferred++] = offset / HK_PAGE_SIZE;
	pthread_mutex_unlock(&n->deferred_lock);
	uint64_t one = 1;
	if (n->evfd >= 0 && write(n->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

/* A page given for writing, dropped here, whose translations are now gone
 * (holder.c): its bytes go to the receiver. */
static void send_held_data(struct hk_node *n, uint64_t page, int to)
{
	for (struct hk_local_msg **ph = &n->held_data; *ph; ph = &(*ph)->next) {
		struct hk_local_msg *h = *ph;
		if (h->m.page != page)
			continue;
		*ph = h->next;
		hk_send_page(n, to, HK_MSG_DATA, page, (int)h->m.node, h->m.mode, h->m.aux,
			     h->data);
		free(h);
		return;
	}
	hk_die("page %lu: its data was held, but is not", page);
}

/* Event thread: send the acknowledgements whose translations are gone. */
void hk_page_flush_deferred(struct hk_node *n)
{
	struct { uint64_t page, id; } left[HK_MOVING_MAX];
	pthread_mutex_lock(&n->deferred_lock);
	size_t cnt = n->ndeferred;
	uint64_t *d = n->deferred;
	n->deferred = NULL;
	n->ndeferred = n->cap_deferred = 0;
	int nleft = n->nleft;
	memcpy(left, n->left, (size_t)nleft * sizeof(left[0]));
	n->nleft = 0;
	pthread_mutex_unlock(&n->deferred_lock);
	for (int i = 0; i < nleft; i++)
		hk_requester_thread_left(n, left[i].page, left[i].id);
	for (size_t i = 0; i < cnt; i++) {
		struct hk_page *p = &n->pages[d[i]];
		if (!p->ack_type) {
			hk_warn("page %lu: translations gone, but no acknowledgement was held", d[i]);
			continue;
		}
		unsigned type = p->ack_type;
		p->ack_type = 0;
		hk_stats_stage(&n->stats, HK_STAGE_TB_HOLD, p->t_left);
		if (type == HK_MSG_DATA)
			send_held_data(n, d[i], p->ack_to);
		else
			hk_send_page(n, p->ack_to, type, d[i], n->self, p->ack_mode, p->ack_aux,
				     NULL);
	}
	free(d);
	hk_drain_local(n);
}

void hk_must(int r, const char *what, uint64_t page)
{
	/* A failed install/protect/drop means our page states no longer
	 * describe the mapping: continuing could corrupt guest memory. */
	if (r < 0)
		hk_die("%s page %lu: %s", what, page, strerror(-r));
}

void hk_coherence_check_invariants(struct hk_node *n, uint64_t page)
{
#ifdef HK_DEBUG
	struct hk_page *p = &n->pages[page];
	HK_ASSERT(p->state <= HK_PS_GIVING);
	if (hk_home_of(n, page) == n->self) {
		struct hk_dir_entry *e = &n->dir.e[page];
		if (e->phase == HK_DIR_IDLE) {
			/* one writer or many readers, and the directory agrees
			 * with this node's own state */
			if (e->owner < 0) {
				HK_ASSERT(e->copyset == 0);
			} else {
				HK_ASSERT(e->copyset & hk_bit(e->owner));
			}
			if (e->copyset & hk_bit(n->self))
				HK_ASSERT(p->state == HK_PS_SHARED || p->state == HK_PS_EXCL);
			else
				HK_ASSERT(p->state == HK_PS_INVALID);
			if (p->state == HK_PS_EXCL)
				HK_ASSERT(e->copyset == hk_bit(n->self) && e->owner == n->self);
		}
	}
#else
	(void)n;
	(void)page;
#endif
}

/* ---- pulling a thread out of its fault (see hyperkernel.h) ---- */

uint64_t hk_wake_generation(struct hk_node *n)
{
	return atomic_load(&n->mem.wake_gen);
}

bool hk_thread_in_fault(pid_t tid)
{
	char path[64], buf[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return false;
	buf[r] = 0;
	return !strcmp(buf, "handle_userfault");
}

int hk_stall_left(struct hk_node *n, uint64_t offset, uint64_t stall_id)
{
	if (!n || offset / HK_PAGE_SIZE >= n->mem.npages)
		return -EINVAL;
	pthread_mutex_lock(&n->deferred_lock);
	int r = n->nleft < HK_MOVING_MAX ? 0 : -ENOSPC;
	if (!r) {
		n->left[n->nleft].id = stall_id;
		n->left[n->nleft++].page = offset / HK_PAGE_SIZE;
	}
	pthread_mutex_unlock(&n->deferred_lock);
	uint64_t one = 1;
	if (!r && n->evfd >= 0 && write(n->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return r;
}
