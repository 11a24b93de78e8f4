/* failure.c - a peer that died (EOF, reset or heartbeat silence): tell the
 * other survivors who died, work out which pages died with it, report them
 * to the embedder and make sure no thread stays blocked on them. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "hk.h"

static void lose(struct hk_node *n, int dead);

void hk_failure_peer_lost(struct hk_node *n, int dead)
{
	struct hk_link *l = &n->links[dead];
	if (!l->up)
		return;
	l->up = false;
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
	lose(n, dead);
}

/* Another survivor says `dead` died.  A node killed in the middle of its
 * leave may have said BYE to us and not to `from` (its last frames to
 * `from` still queued in its process): here it left cleanly, there its
 * directory died with it.  The guest cannot go on either way, and the
 * report must name the node that died, not the survivor that stopped
 * because of it (CI on 0d12b8c). */
void hk_failure_peer_reported(struct hk_node *n, int dead, int from)
{
	struct hk_link *l = &n->links[dead];
	if (l->up || !l->bye) {
		hk_failure_peer_lost(n, dead);
		return;
	}
	if (!atomic_load(&n->failed))
		hk_warn("node %d reports node %d lost: it left here, but its leave did not "
			"complete on node %d", from, dead, from);
	lose(n, dead);
}

static void lose(struct hk_node *n, int dead)
{
	if (hk_join_abandoned(n, dead))
		return;
	if (atomic_exchange(&n->failed, true))
		return; /* report the first loss only */
	n->dead_node = dead;
	/* Survivors may stop (and close their links) before the others saw
	 * the EOF; tell them who actually died so every report names it. */
	for (int k = 0; k < n->count; k++) {
		if (k != n->self && k != dead && n->links[k].up) {
			struct hk_msg m = { .type = HK_MSG_PEER_LOST, .node = (uint32_t)dead };
			hk_node_send(n, k, &m);
		}
	}
	/* Now, not after this batch, and into the socket, not the sender
	 * thread's queue: the embedder may end the process at once (a vCPU
	 * that touches a lost page does), and a survivor that missed these
	 * words would name this node, not the dead one (CI on 0d12b8c). */
	for (int k = 0; k < n->count; k++)
		if (k != n->self && k != dead && n->links[k].up)
			hk_link_push(&n->links[k], 1000);
	/* Lost: pages whose directory lived there, and pages whose directory
	 * is here and whose owner (the only up-to-date copy) was there. */
	size_t cap = 16, nr = 0;
	struct hk_page_range *rg = malloc(cap * sizeof(*rg));
	uint64_t lost = 0;
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		int h = hk_home_of(n, pg);
		bool gone = h == dead ||
			    (h == n->self && n->dir.e[pg].owner == dead &&
			     !(n->dir.e[pg].copyset & ~hk_bit(dead)));
		if (!gone)
			continue;
		lost++;
		if (nr && rg[nr - 1].offset + rg[nr - 1].pages * HK_PAGE_SIZE == pg * HK_PAGE_SIZE) {
			rg[nr - 1].pages++;
			continue;
		}
		if (nr == cap) {
			cap *= 2;
			struct hk_page_range *t = realloc(rg, cap * sizeof(*rg));
			if (!t)
				break;
			rg = t;
		}
		rg[nr++] = (struct hk_page_range){ pg * HK_PAGE_SIZE, 1 };
	}
	char text[512];
	int off = snprintf(text, sizeof(text), "node %d died; lost %lu pages", dead, lost);
	for (size_t i = 0; i < nr && off < (int)sizeof(text) - 64; i++)
		off += snprintf(text + off, sizeof(text) - off, "%s0x%lx+%lu", i ? "," : " (",
				rg[i].offset, rg[i].pages);
	if (nr && off < (int)sizeof(text) - 8)
		snprintf(text + off, sizeof(text) - off, "%s)", off >= (int)sizeof(text) - 64 ? ",..." : "");
	hk_warn("%s", text);
	if (!n->cfg.cb.on_peer_lost) {
		hk_warn("no on_peer_lost handler: stopping the process");
		_exit(3);
	}
	n->cfg.cb.on_peer_lost(n->cfg.cb.opaque, dead, rg, nr, lost);
	free(rg);
	/* The embedder chose to continue: no thread may stay blocked. */
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		struct hk_page *p = &n->pages[pg];
		if (!p->waiters)
			continue;
		while (p->waiters) {
			struct hk_waiter *w = p->waiters;
			p->waiters = w->next;
			free(w);
		}
		hk_failure_poison(n, pg);
	}
}

/* After a loss, a thread that faults gets SIGBUS rather than waiting for a
 * page that will not come.  A present page (a read-only copy written to)
 * cannot take a poison marker: drop it first, or the thread would wait (or,
 * woken, fault again) for ever. */
void hk_failure_poison(struct hk_node *n, uint64_t page)
{
	hk_memory_drop(&n->mem, page);
	if (hk_memory_poison(&n->mem, page) < 0)
		hk_memory_wake(&n->mem, page);
}
