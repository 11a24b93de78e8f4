/* sim_memory.c - guest RAM of a simulated node (replaces src/memory.c).
 * Each page has a mapping state that says what an access does, with the
 * semantics of userfaultfd on anonymous memory: UFFDIO_COPY and an
 * unprotecting UFFDIO_WRITEPROTECT wake the waiters, MADV_DONTNEED leaves a
 * missing page, the zero page takes a write by copy-on-write without a
 * fault.  A dropped page is scribbled over, so reading a stale mapping can
 * never look right by accident. */
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sim.h"

struct sim_node *sim_node_of_memory(const struct hk_memory *mem)
{
	for (int k = 0; k < sim.nodes; k++)
		if (sim.node[k].memfd == mem->uffd)
			return &sim.node[k];
	hk_die("sim: unknown memory");
}

int hk_memory_open(struct hk_memory *mem)
{
	memset(mem, 0, sizeof(*mem));
	/* a real fd, so the event loop's epoll set-up works unchanged */
	mem->uffd = eventfd(0, EFD_CLOEXEC);
	mem->pagemap_fd = -1;
	return mem->uffd < 0 ? -errno : 0;
}

void hk_memory_close(struct hk_memory *mem)
{
	if (mem->uffd >= 0)
		close(mem->uffd);
	mem->uffd = -1;
}

int hk_memory_add_region(struct hk_memory *mem, void *host, size_t len)
{
	if (mem->nregions == HK_MAX_REGIONS || !len || len % HK_PAGE_SIZE)
		return -EINVAL;
	mem->regions[mem->nregions].host = host;
	mem->regions[mem->nregions].len = len;
	mem->regions[mem->nregions].first_page = mem->npages;
	mem->nregions++;
	mem->npages += len / HK_PAGE_SIZE;
	return 0;
}

static uint8_t *map_of(struct hk_memory *mem, uint64_t page)
{
	struct sim_node *sn = sim_node_of_memory(mem);
	if (page >= sim.pages)
		hk_die("sim: page %lu out of range", page);
	sim_touch(page);
	return &sn->map[page];
}

int hk_memory_install(struct hk_memory *mem, uint64_t page, const void *src, bool wp)
{
	hk_memory_waking(mem);
	uint8_t *m = map_of(mem, page);
	if (*m != SIM_NONE)
		return -EEXIST;
	memcpy(hk_memory_page_addr(mem, page), src, HK_PAGE_SIZE);
	*m = wp ? SIM_RO : SIM_RW;
	sim_wake((int)(sim_node_of_memory(mem) - sim.node), page);
	return 0;
}

int hk_memory_install_run(struct hk_memory *mem, uint64_t first, uint32_t npages,
			  const void *src)
{
	uint8_t *dst = hk_memory_run_addr(mem, first, npages);
	if (!dst)
		return -ERANGE;
	for (uint32_t i = 0; i < npages; i++) {
		int r = hk_memory_install(mem, first + i, (const uint8_t *)src + i * HK_PAGE_SIZE,
					  true);
		if (r < 0)
			return r;
	}
	return 0;
}

int hk_memory_install_quiet(struct hk_memory *mem, uint64_t page, const void *src)
{
	uint8_t *m = map_of(mem, page);
	if (*m != SIM_NONE)
		return -EEXIST;
	memcpy(hk_memory_page_addr(mem, page), src, HK_PAGE_SIZE);
	*m = SIM_RW; /* as memory.c: nobody is woken */
	return 0;
}

int hk_memory_install_zero(struct hk_memory *mem, uint64_t page, bool wp)
{
	static const uint8_t zero[HK_PAGE_SIZE];
	return hk_memory_install(mem, page, zero, wp);
}

int hk_memory_protect(struct hk_memory *mem, uint64_t page, bool wp)
{
	if (!wp)
		hk_memory_waking(mem);
	uint8_t *m = map_of(mem, page);
	switch (*m) {
	case SIM_RO:
	case SIM_RW:
		*m = wp ? SIM_RO : SIM_RW;
		break;
	case SIM_ZERO:
	case SIM_ZERO_WP:
		*m = wp ? SIM_ZERO_WP : SIM_ZERO;
		break;
	default:
		return -ENOENT;
	}
	return 0; /* as memory.c: an unprotect wakes nobody */
}

int hk_memory_drop(struct hk_memory *mem, uint64_t page)
{
	uint8_t *m = map_of(mem, page);
	*m = SIM_NONE;
	memset(hk_memory_page_addr(mem, page), 0xa5, HK_PAGE_SIZE);
	return 0;
}

int hk_memory_wake(struct hk_memory *mem, uint64_t page)
{
	hk_memory_waking(mem);
	map_of(mem, page);
	sim_wake((int)(sim_node_of_memory(mem) - sim.node), page);
	return 0;
}

int hk_memory_poison(struct hk_memory *mem, uint64_t page)
{
	hk_memory_waking(mem);
	/* as memory.c: a present page makes UFFDIO_POISON fail with EEXIST,
	 * which it ignores, and nobody is woken */
	uint8_t *m = map_of(mem, page);
	if (*m != SIM_NONE && *m != SIM_POISON)
		return 0;
	*m = SIM_POISON;
	sim_wake((int)(sim_node_of_memory(mem) - sim.node), page);
	return 0;
}

int64_t hk_memory_premap_zero(struct hk_memory *mem, uint64_t page, uint64_t count)
{
	for (uint64_t i = 0; i < count; i++) {
		uint8_t *m = map_of(mem, page + i);
		if (*m != SIM_NONE)
			return (int64_t)i ? (int64_t)i : -EEXIST;
		*m = SIM_ZERO;
		memset(hk_memory_page_addr(mem, page + i), 0, HK_PAGE_SIZE);
	}
	return (int64_t)count;
}

int hk_memory_scan_real(struct hk_memory *mem, uint64_t page, uint64_t count, uint8_t *real)
{
	for (uint64_t i = 0; i < count; i++) {
		uint8_t m = *map_of(mem, page + i);
		real[i] = m == SIM_RO || m == SIM_RW;
	}
	return 0;
}
