/* directory.c - the home node's record of every page it is home for: the
 * owner, the copyset, and the queue that serialises requests per page (no
 * global lock: only the event thread touches it). */
#include <stdlib.h>

#include "hk.h"

int hk_directory_init(struct hk_directory *d, uint64_t npages)
{
	d->e = calloc(npages ? npages : 1, sizeof(*d->e));
	if (!d->e)
		return -ENOMEM;
	d->npages = npages;
	for (uint64_t i = 0; i < npages; i++) {
		d->e[i].owner = -1;
		d->e[i].cur_node = -1;
	}
	return 0;
}

void hk_directory_destroy(struct hk_directory *d)
{
	if (!d->e)
		return;
	for (uint64_t i = 0; i < d->npages; i++) {
		struct hk_dir_req *r;
		while ((r = hk_directory_dequeue(&d->e[i])))
			free(r);
	}
	free(d->e);
	d->e = NULL;
}

void hk_directory_enqueue(struct hk_dir_entry *e, struct hk_dir_req *r)
{
	r->next = NULL;
	if (e->qtail)
		e->qtail->next = r;
	else
		e->qhead = r;
	e->qtail = r;
}

struct hk_dir_req *hk_directory_dequeue(struct hk_dir_entry *e)
{
	struct hk_dir_req *r = e->qhead;
	if (r) {
		e->qhead = r->next;
		if (!e->qhead)
			e->qtail = NULL;
	}
	return r;
}

/* Interleave homes by chunks so neighbouring pages share a home (locality
 * for the guest's large allocations) while the directory load spreads. */
int hk_directory_home(uint64_t page, uint32_t chunk, int count)
{
	if (chunk == 0)
		chunk = 1;
	return (int)((page / chunk) % (uint64_t)count);
}
