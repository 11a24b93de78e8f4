/* region.c - where a page of the region space lives in the host mapping, and
 * back: pure arithmetic over the registered regions, shared by the real
 * userfaultfd memory (memory.c) and the simulation's. */
#include "hk.h"

uint8_t *hk_memory_page_addr(const struct hk_memory *mem, uint64_t page)
{
	for (int i = 0; i < mem->nregions; i++) {
		uint64_t first = mem->regions[i].first_page;
		if (page >= first && page < first + mem->regions[i].len / HK_PAGE_SIZE)
			return mem->regions[i].host + (page - first) * HK_PAGE_SIZE;
	}
	return NULL;
}

int64_t hk_memory_addr_page(const struct hk_memory *mem, uint64_t addr)
{
	for (int i = 0; i < mem->nregions; i++) {
		uint64_t start = (uintptr_t)mem->regions[i].host;
		if (addr >= start && addr < start + mem->regions[i].len)
			return (int64_t)(mem->regions[i].first_page + (addr - start) / HK_PAGE_SIZE);
	}
	return -ERANGE;
}
