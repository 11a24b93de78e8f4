/* memory.c - guest RAM under userfaultfd: register (missing + write-protect,
 * THP off), install a page (optionally read-only), write-protect, drop, wake.
 * Only the event thread calls these once the node runs. */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hk.h"

/* Debian 12's headers predate UFFDIO_POISON (Linux 6.6). */
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
#endif

static int uffd_open(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

int hk_memory_open(struct hk_memory *mem)
{
	memset(mem, 0, sizeof(*mem));
	mem->pagemap_fd = -1;
	int fd = uffd_open();
	if (fd < 0)
		return fd;
	struct uffdio_api api = { .api = UFFD_API };
	/* Ask for what we need; POISON (kills hung faulters) and EXACT_ADDRESS
	 * (which line of a hot page, for the statistics) are optional. */
	uint64_t need = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	api.features = need | UFFD_FEATURE_POISON | UFFD_FEATURE_EXACT_ADDRESS;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		fd = uffd_open();
		if (fd < 0)
			return fd;
		api = (struct uffdio_api){ .api = UFFD_API, .features = need };
		if (ioctl(fd, UFFDIO_API, &api) < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
	}
	if ((api.features & need) != need) {
		close(fd);
		return -ENOTSUP;
	}
	mem->uffd = fd;
	mem->features = api.features;
	return 0;
}

void hk_memory_close(struct hk_memory *mem)
{
	if (mem->uffd > 0)
		close(mem->uffd);
	mem->uffd = -1;
	if (mem->pagemap_fd > 0)
		close(mem->pagemap_fd);
	mem->pagemap_fd = -1;
}

int hk_memory_add_region(struct hk_memory *mem, void *host, size_t len)
{
	if (mem->nregions >= HK_MAX_REGIONS)
		return -ENOSPC;
	if (((uintptr_t)host | len) & (HK_PAGE_SIZE - 1) || len == 0)
		return -EINVAL;
	/* 4 KiB is the coherence unit: a huge page would move 2 MiB at once. */
	if (madvise(host, len, MADV_NOHUGEPAGE) < 0)
		return -errno;
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)host, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(mem->uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	int i = mem->nregions++;
	mem->regions[i].host = host;
	mem->regions[i].len = len;
	mem->regions[i].first_page = mem->npages;
	mem->npages += len / HK_PAGE_SIZE;
	return 0;
}

static int copy_page(struct hk_memory *mem, uint64_t page, const void *src, uint64_t mode)
{
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst)
		return -ERANGE;
	for (;;) {
		struct uffdio_copy c = {
			.dst = (uintptr_t)dst,
			.src = (uintptr_t)src,
			.len = HK_PAGE_SIZE,
			.mode = mode,
		};
		if (ioctl(mem->uffd, UFFDIO_COPY, &c) == 0)
			return 0;
		if (errno == EAGAIN && c.copy == 0)
			continue;
		if (errno == EAGAIN && c.copy == HK_PAGE_SIZE)
			return 0;
		return -errno;
	}
}

/* Place a whole page atomically and wake every thread waiting on it.
 * EEXIST means a page is already mapped there: our page states say it must
 * not be, so the caller treats it as a bug.  EAGAIN: the mm changed under
 * us (e.g. fork), retry. */
int hk_memory_install(struct hk_memory *mem, uint64_t page, const void *src, bool wp)
{
	hk_memory_waking(mem);
	return copy_page(mem, page, src, wp ? UFFDIO_COPY_MODE_WP : 0);
}

/* Pages first .. first + npages - 1, one region's, contiguous at src, placed
 * write-protected in one UFFDIO_COPY that wakes their waiters: each page
 * through its own ioctl cost twice as much (2.5 against 1.25 us a page
 * here), and a streaming reader's event thread spends most of its time
 * installing (arrivals.c).  The caller checked they lie in one region. */
int hk_memory_install_run(struct hk_memory *mem, uint64_t first, uint32_t npages,
			  const void *src)
{
	uint8_t *dst = hk_memory_run_addr(mem, first, npages);
	if (!dst)
		return -ERANGE;
	hk_memory_waking(mem);
	uint64_t done = 0, len = (uint64_t)npages * HK_PAGE_SIZE;
	while (done < len) {
		struct uffdio_copy c = {
			.dst = (uintptr_t)dst + done,
			.src = (uintptr_t)src + done,
			.len = len - done,
			.mode = UFFDIO_COPY_MODE_WP,
		};
		if (ioctl(mem->uffd, UFFDIO_COPY, &c) == 0)
			return 0;
		/* EAGAIN: the mm changed under us (e.g. fork); what was
		 * copied stays, the rest goes again */
		if (errno != EAGAIN)
			return -errno;
		if (c.copy > 0)
			done += (uint64_t)c.copy;
	}
	return 0;
}

/* Writable at once, and nobody woken: a page whose giver dropped it before
 * sending (HK_DATA_DROPPED).  complete_waiters wakes its waiters, through
 * on_write_wake when one of them writes, as after an unprotect: a store
 * must not land before the embedder is ready for it. */
int hk_memory_install_quiet(struct hk_memory *mem, uint64_t page, const void *src)
{
	return copy_page(mem, page, src, UFFDIO_COPY_MODE_DONTWAKE);
}

/* A zeroed buffer through UFFDIO_COPY rather than UFFDIO_ZEROPAGE: the
 * shared zero page would take a copy-on-write on the first write, which
 * we do not want on the path we measure, and COPY takes MODE_WP. */
int hk_memory_install_zero(struct hk_memory *mem, uint64_t page, bool wp)
{
	static const uint8_t zero[HK_PAGE_SIZE] __attribute__((aligned(4096)));
	return hk_memory_install(mem, page, zero, wp);
}

int hk_memory_protect(struct hk_memory *mem, uint64_t page, bool wp)
{
	if (!wp)
		hk_memory_waking(mem);
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst)
		return -ERANGE;
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)dst, .len = HK_PAGE_SIZE },
		/* the waiters' wake is complete_waiters' (on_write_wake) */
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};
	return ioctl(mem->uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

/* Anonymous memory: MADV_DONTNEED leaves no uffd-wp marker, so the next
 * access raises a missing fault, which is what an Invalid page must do. */
int hk_memory_drop(struct hk_memory *mem, uint64_t page)
{
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst)
		return -ERANGE;
	return madvise(dst, HK_PAGE_SIZE, MADV_DONTNEED) < 0 ? -errno : 0;
}

int hk_memory_wake(struct hk_memory *mem, uint64_t page)
{
	hk_memory_waking(mem);
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst)
		return -ERANGE;
	struct uffdio_range r = { .start = (uintptr_t)dst, .len = HK_PAGE_SIZE };
	return ioctl(mem->uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/* After a peer is lost: the faulting thread gets SIGBUS instead of waiting
 * forever for a page that no longer exists. */
int hk_memory_poison(struct hk_memory *mem, uint64_t page)
{
	hk_memory_waking(mem);
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst)
		return -ERANGE;
	if (!(mem->features & UFFD_FEATURE_POISON))
		return -ENOTSUP;
	struct uffdio_poison p = { .range = { .start = (uintptr_t)dst, .len = HK_PAGE_SIZE } };
	if (ioctl(mem->uffd, UFFDIO_POISON, &p) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Untouched pages at their home: map the shared zero page, so that a read
 * costs nothing and a first write is an ordinary in-kernel copy-on-write (a
 * zero-page pte carries no uffd-wp bit, so no userfault is raised; checked
 * on Linux 6.18).  No memory is used until a page is written. */
int64_t hk_memory_premap_zero(struct hk_memory *mem, uint64_t page, uint64_t count)
{
	uint8_t *dst = hk_memory_page_addr(mem, page);
	if (!dst || !count || hk_memory_page_addr(mem, page + count - 1) != dst + (count - 1) * HK_PAGE_SIZE)
		return -ERANGE;
	struct uffdio_zeropage z = {
		.range = { .start = (uintptr_t)dst, .len = count * HK_PAGE_SIZE },
		.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
	};
	if (ioctl(mem->uffd, UFFDIO_ZEROPAGE, &z) < 0) {
		if (z.zeropage > 0)
			return z.zeropage / HK_PAGE_SIZE;
		return -errno;
	}
	if (mem->pagemap_fd < 0)
		mem->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (mem->pagemap_fd >= 0 && !mem->zero_pfn) {
		uint64_t e = 0;
		if (pread(mem->pagemap_fd, &e, sizeof(e), (off_t)((uintptr_t)dst / HK_PAGE_SIZE * 8)) ==
			    (ssize_t)sizeof(e) && (e >> 63))
			mem->zero_pfn = e & ((1ull << 55) - 1); /* 0 without CAP_SYS_ADMIN */
	}
	return (int64_t)count;
}

/* Residency of premapped pages, for the budget: /proc/self/pagemap tells the
 * zero page (its PFN, or, without the PFN, "not exclusively mapped") from a
 * page of our own.  Only accounting depends on this, never data. */
int hk_memory_scan_real(struct hk_memory *mem, uint64_t page, uint64_t count, uint8_t *real)
{
	uint64_t e[512];
	if (count > 512)
		return -EINVAL;
	if (mem->pagemap_fd < 0)
		return -ENOENT;
	uint64_t i = 0;
	while (i < count) {
		uint8_t *a = hk_memory_page_addr(mem, page + i);
		if (!a)
			return -ERANGE;
		uint64_t run = 1; /* contiguous within one region */
		while (i + run < count && hk_memory_page_addr(mem, page + i + run) == a + run * HK_PAGE_SIZE)
			run++;
		ssize_t r = pread(mem->pagemap_fd, e, run * 8, (off_t)((uintptr_t)a / HK_PAGE_SIZE * 8));
		if (r != (ssize_t)(run * 8))
			return r < 0 ? -errno : -EIO;
		for (uint64_t k = 0; k < run; k++) {
			bool present = e[k] >> 63, swapped = (e[k] >> 62) & 1;
			uint64_t pfn = e[k] & ((1ull << 55) - 1);
			bool zero = present && (mem->zero_pfn ? pfn == mem->zero_pfn : !((e[k] >> 56) & 1));
			real[i + k] = swapped || (present && !zero);
		}
		i += run;
	}
	return 0;
}
