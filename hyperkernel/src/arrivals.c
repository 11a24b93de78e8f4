// SPDX-License-Identifier: GPL-2.0
/*
 * Arrivals: read copies that come in one batch from a link, installed
 * together.
 *
 * A thread streaming through remote memory makes read-ahead ask for 32
 * pages at a time, and their DATA frames arrive back to back in one recv.
 * Installed one UFFDIO_COPY each, the reading node's event thread spent most
 * of its CPU installing (firstread, 512 MiB: 82% of the reading node's CPU,
 * the guest's vCPU 17%), and both share that node's CPUs.  One UFFDIO_COPY
 * for a run of consecutive pages costs half as much a page.
 *
 * Only a plain read copy waits here (DATA, shared mode, neither a push nor
 * dropped).  It waits as a page still on its way: state INVALID, its request
 * pending, nothing mapped, so whoever looks at the page meanwhile sees what it
 * would have seen a microsecond earlier.  The run is installed, and each page
 * finished as hk_requester_on_data would have, before anything else is
 * handled: another message (hk_dispatch), a fault, a timer, the end of the
 * link's batch (loop.c), so the order of effects is the one the frames
 * arrived in.
 */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

#define RUN_MID HK_ARRIVALS_RUN /* a run grows up or down from the middle slot */

int hk_arrivals_init(struct hk_node *n)
{
	struct hk_arrivals *a = &n->arrivals;
	a->len = 0;
	if (posix_memalign((void **)&a->buf, HK_PAGE_SIZE, 2 * HK_ARRIVALS_RUN * HK_PAGE_SIZE))
		return -ENOMEM;
	return 0;
}

void hk_arrivals_destroy(struct hk_node *n)
{
	free(n->arrivals.buf);
	n->arrivals.buf = NULL;
	n->arrivals.len = 0;
}

/* Install the run, then finish its pages in slot order. */
void hk_arrivals_flush(struct hk_node *n)
{
	struct hk_arrivals *a = &n->arrivals;
	if (!a->len)
		return;
	uint32_t len = a->len, lo = a->lo;
	a->len = 0;
	/* a peer was lost meanwhile: the failure path owns every page now,
	 * and no page moves any more (hk_dispatch) */
	if (atomic_load(&n->failed))
		return;
	int r = hk_memory_install_run(&n->mem, a->first, len, a->buf + lo * HK_PAGE_SIZE);
	if (r < 0)
		hk_die("install of pages %lu..%lu: %s", a->first, a->first + len - 1, strerror(-r));
	n->stats.node.install_runs++;
	for (uint32_t i = 0; i < len; i++) {
		struct hk_arrival *e = &a->slot[lo + i];
		hk_requester_installed(n, e->from, &e->m, e->arrived);
	}
}

/* Stage a plain read copy, which the caller checked (hk_requester_on_data):
 * false if it must be installed now (outside a link's batch). */
bool hk_arrivals_take(struct hk_node *n, int from, const struct hk_msg *m, uint64_t arrived)
{
	struct hk_arrivals *a = &n->arrivals;
	if (!a->batching || !a->buf)
		return false;
	/* it extends the run up or down, within its slots, its length and one
	 * range of host memory (hk_memory_install_run), or starts a new one */
	bool up = a->len && m->page == a->first + a->len && a->lo + a->len < 2 * HK_ARRIVALS_RUN;
	bool down = a->len && m->page + 1 == a->first && a->lo > 0;
	if (!(up || down) || a->len == HK_ARRIVALS_RUN ||
	    !hk_memory_run_addr(&n->mem, up ? a->first : m->page, a->len + 1)) {
		hk_arrivals_flush(n);
		up = true;
		a->lo = RUN_MID;
		a->first = m->page;
	}
	uint32_t s = up ? a->lo + a->len : --a->lo;
	if (!up)
		a->first = m->page;
	uint8_t *dst = a->buf + s * HK_PAGE_SIZE;
	memcpy(dst, m->data, HK_PAGE_SIZE);
	struct hk_arrival *e = &a->slot[s];
	e->from = from;
	e->arrived = arrived;
	e->m = *m;
	e->m.data = dst;
	a->len++;
	return true;
}
