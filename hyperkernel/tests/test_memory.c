/* test_memory.c - the userfaultfd layer on its own: faults from another
 * thread arrive with thread id and kind, installs (read-only or writable),
 * write-protect, drop and re-fault, and a double install is refused. */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hk.h"
#include "hk_test.h"

static struct hk_memory mem;
static uint8_t *region;

struct fault { uint64_t page; bool write, wp; pid_t tid; };

static bool next_fault(struct fault *f)
{
	struct pollfd p = { .fd = mem.uffd, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1)
		return false;
	struct uffd_msg m;
	if (read(mem.uffd, &m, sizeof(m)) != sizeof(m) || m.event != UFFD_EVENT_PAGEFAULT)
		return false;
	f->page = (uint64_t)hk_memory_addr_page(&mem, m.arg.pagefault.address);
	f->write = m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE;
	f->wp = m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
	f->tid = (pid_t)m.arg.pagefault.feat.ptid;
	return true;
}

static volatile uint64_t seen;
static pid_t toucher_tid;

static void *reader(void *arg)
{
	toucher_tid = (pid_t)syscall(SYS_gettid);
	seen = *(volatile uint64_t *)arg;
	return NULL;
}

static void *writer(void *arg)
{
	*(volatile uint64_t *)arg = 0x1234;
	return NULL;
}

static void setup(void)
{
	region = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hk_memory_open(&mem) == 0);
	CHECK(hk_memory_add_region(&mem, region, 8 * 4096) == 0);
	CHECK(mem.npages == 8);
	CHECK(hk_memory_add_region(&mem, region + 1, 4096) == -EINVAL);
}

static void test_read_fault_then_wp_fault(void)
{
	pthread_t t;
	pthread_create(&t, NULL, reader, region + 4096);
	struct fault f;
	CHECK(next_fault(&f));
	CHECK(f.page == 1 && !f.write && f.tid == toucher_tid);
	uint8_t page[4096];
	memset(page, 0, sizeof(page));
	page[0] = 42;
	CHECK(hk_memory_install(&mem, 1, page, true) == 0); /* read-only copy, wakes */
	pthread_join(t, NULL);
	CHECK(seen == 42);
	CHECK(hk_memory_install(&mem, 1, page, true) == -EEXIST);
	pthread_create(&t, NULL, writer, region + 4096);
	CHECK(next_fault(&f));
	CHECK(f.page == 1 && f.write && f.wp);
	/* an unprotect does not wake the writer: its store lands only at the
	 * wake (the embedder may first drop translations of the old bytes) */
	CHECK(hk_memory_protect(&mem, 1, false) == 0);
	usleep(50000);
	CHECK(*(volatile uint64_t *)(region + 4096) != 0x1234);
	CHECK(hk_memory_wake(&mem, 1) == 0);
	pthread_join(t, NULL);
	CHECK(*(uint64_t *)(region + 4096) == 0x1234);
}

static void test_drop_refaults_and_zero_install(void)
{
	CHECK(hk_memory_drop(&mem, 1) == 0);
	pthread_t t;
	pthread_create(&t, NULL, reader, region + 4096);
	struct fault f;
	CHECK(next_fault(&f));
	CHECK(f.page == 1);
	CHECK(hk_memory_install_zero(&mem, 1, false) == 0);
	pthread_join(t, NULL);
	CHECK(seen == 0);
	/* writable zero page: no further fault on write */
	*(volatile uint64_t *)(region + 4096) = 7;
	CHECK(*(uint64_t *)(region + 4096) == 7);
	/* write-protect then a write faults as WP */
	CHECK(hk_memory_protect(&mem, 1, true) == 0);
	pthread_create(&t, NULL, writer, region + 4096);
	CHECK(next_fault(&f));
	CHECK(f.wp);
	CHECK(hk_memory_protect(&mem, 1, false) == 0);
	CHECK(hk_memory_wake(&mem, 1) == 0);
	pthread_join(t, NULL);
	CHECK(hk_memory_page_addr(&mem, 8) == NULL);
	CHECK(hk_memory_addr_page(&mem, (uintptr_t)region + 8 * 4096) < 0);
}

int main(void)
{
	RUN(setup);
	RUN(test_read_fault_then_wp_fault);
	RUN(test_drop_refaults_and_zero_install);
	hk_memory_close(&mem);
	TEST_DONE();
}
