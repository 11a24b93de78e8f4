/* test_coherence.c - two nodes in one process (each its own region and
 * userfaultfd): data written on one is read on the other, ownership moves
 * back and forth, atomic counters sum exactly, first touch is a zero page,
 * the vcpu policy hands a move decision to the embedder, and a node past its
 * budget evicts to the other without losing data. */
#include <errno.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

#define PAGES 32

static struct hk_node *nodes[2];
static uint8_t *regions[2];
static int stall_moves, stall_calls;

static void on_stall(void *opaque, const struct hk_stall *s, struct hk_decision *d)
{
	(void)opaque;
	stall_calls++;
	if (d->kind == HK_MOVE_VCPU) {
		/* The embedder sees the policy's move and, having no vCPU to
		 * move in this test, asks for the page instead. */
		(void)s;
		if (d->target_node == 0) /* the writer, as the directory knows */
			stall_moves++;
		d->kind = HK_BRING_PAGE;
	}
}

/* homed1: pages [0, PAGES / 2) are homed on node 1 (hk_region_set_home) */
static void start_pair_homed(const char *policy1, uint64_t budget0, bool homed1)
{
	tn_init_dir(2);
	struct tn_starter st[2];
	for (int i = 0; i < 2; i++) {
		struct hk_config c;
		tn_config(&c, i, 2, "pair");
		if (i == 1) {
			c.policy = policy1;
			c.cb.on_stall = on_stall;
		}
		if (i == 0)
			c.budget_bytes = budget0;
		c.heartbeat_ms = 50;
		regions[i] = tn_region(PAGES);
		CHECK(hk_node_new(&c, &nodes[i]) == 0);
		CHECK(hk_region_register(nodes[i], regions[i], PAGES * 4096) == 0);
		if (homed1)
			CHECK(hk_region_set_home(nodes[i], 0, PAGES / 2 * 4096, 1) == 0);
		st[i].node = nodes[i];
		pthread_create(&st[i].th, NULL, tn_start_main, &st[i]);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(st[i].th, NULL);
		CHECK(st[i].result == 0);
	}
}

static void start_pair(const char *policy1, uint64_t budget0)
{
	start_pair_homed(policy1, budget0, false);
}

static void stop_pair(void)
{
	for (int i = 0; i < 2; i++)
		hk_node_shutdown(nodes[i]);
	for (int i = 0; i < 2; i++) {
		hk_node_free(nodes[i]);
		munmap(regions[i], PAGES * 4096);
	}
}

/* Node k's fault trace (HK_FAULT_TRACE=prefix): records by kind, after a
 * header that names the node; -1 if a line is not a record. */
static int trace_counts(const char *prefix, int k, int *reads, int *writes)
{
	char path[256], line[256];
	snprintf(path, sizeof(path), "%s.node%d", prefix, k);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int self = -1, nodes = 0, bad = 0;
	*reads = *writes = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long t0, wait, page, gt;
		int vcpu, home;
		char rw, mode;
		if (sscanf(line, "# hk fault trace 1 node=%d nodes=%d", &self, &nodes) == 2 ||
		    line[0] == '#')
			continue;
		if (sscanf(line, "%lu %lu %d %lx %c %c %lx %d", &t0, &wait, &vcpu, &page, &rw, &mode,
			   &gt, &home) != 8 || (rw != 'r' && rw != 'w') || home < 0 || home > 1)
			bad++;
		*reads += rw == 'r';
		*writes += rw == 'w';
	}
	fclose(f);
	unlink(path);
	return self == k && nodes == 2 && !bad ? 0 : -1;
}

static void test_write_here_read_there(void)
{
	char prefix[] = "/tmp/hk-trace-XXXXXX/f";
	prefix[strlen(prefix) - 2] = 0;
	CHECK(mkdtemp(prefix) != NULL);
	strcat(prefix, "/f");
	setenv("HK_FAULT_TRACE", prefix, 1);
	/* each read of node 1's a copy, each write an upgrade: without
	 * migratory reads, which would soon bring the page writable at the
	 * read (test_a_page_read_then_written_in_turn_comes_writable_at_the_read) */
	setenv("HK_MIGRATORY", "0", 1);
	start_pair("page", 0);
	unsetenv("HK_FAULT_TRACE");
	unsetenv("HK_MIGRATORY");
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	CHECK(b[2 * 512] == 0); /* first touch, page 2, home 0: a zero grant */
	for (uint64_t round = 1; round <= 50; round++) {
		a[5 * 512] = round; /* page 5 moves to node 0 exclusive */
		CHECK(b[5 * 512] == round); /* node 1 gets a shared copy */
		b[5 * 512 + 1] = round * 3; /* node 1 takes it exclusive */
		CHECK(a[5 * 512 + 1] == round * 3);
		CHECK(a[5 * 512] == round);
	}
	char *js = hk_stats_json(nodes[1]);
	CHECK(tn_counter(js, "zero_fills") == 1);
	CHECK(tn_counter(js, "pages_received") >= 50);
	CHECK(tn_counter(js, "invalidations_received") >= 49);
	free(js);
	stop_pair(); /* flushes the traces */
	/* every stall in a trace: node 1 read page 5 fifty times and wrote it
	 * fifty times (upgrades), and node 0 wrote it back */
	int r0, w0, r1, w1;
	CHECK(trace_counts(prefix, 0, &r0, &w0) == 0 && trace_counts(prefix, 1, &r1, &w1) == 0);
	CHECK(r1 >= 50 && w1 >= 50 && w0 >= 49);
	*strrchr(prefix, '/') = 0;
	rmdir(prefix);
}

/* Two nodes that only store to a page take it from each other whole, each
 * time with the other's words in it, and the giver drops it before it sends:
 * no XFER_ACK/XFER_DROPPED round trip (those are an eviction's). */
static void test_a_page_written_in_turn_comes_writable_in_one_message(void)
{
	start_pair("page", 0);
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	const uint64_t w = 7 * 512; /* page 7: home node 1 */
	for (uint64_t round = 1; round <= 50; round++) {
		a[w] = round; /* a store, no load: node 0 takes it exclusive */
		b[w + 1] = round * 5; /* and node 1 takes it back */
		CHECK(b[w] == round);
		a[w + 2] = round * 7;
		CHECK(a[w + 1] == round * 5);
	}
	for (int k = 0; k < 2; k++) {
		char *js = hk_stats_json(nodes[k]);
		CHECK(tn_counter(js, "pages_received") >= 49);
		CHECK(strstr(js, "\"xfer_ack\"") == NULL && strstr(js, "\"xfer_dropped\"") == NULL);
		CHECK(tn_counter(js, "malformed_messages") == 0);
		free(js);
	}
	stop_pair();
}

/* A page each node reads and then writes, in turn (a lock's owner, a run
 * queue), is soon asked for to write at the read: most reads bring it
 * writable, and most upgrades (a second stall each) are gone.  A page that
 * one node writes and the other only reads stays a copy there. */
static void test_a_page_read_then_written_in_turn_comes_writable_at_the_read(void)
{
	start_pair("page", 0);
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	const uint64_t m = 9 * 512;  /* page 9: read, then written, by both */
	const uint64_t pc = 11 * 512; /* page 11: node 0 writes, node 1 reads */
	const uint64_t rounds = 50;
	for (uint64_t round = 1; round <= rounds; round++) {
		CHECK(a[m] == 2 * round - 2); /* the load stalls, then the store */
		a[m] = 2 * round - 1;
		CHECK(b[m] == 2 * round - 1);
		b[m] = 2 * round;
		a[pc] = round;
		CHECK(b[pc] == round);
	}
	long upgrades = 0, asked = 0;
	for (int k = 0; k < 2; k++) {
		char *js = hk_stats_json(nodes[k]);
		upgrades += tn_counter(js, "write_stalls");
		asked += tn_counter(js, "migratory_reads");
		CHECK(tn_counter(js, "malformed_messages") == 0);
		/* at most page 9's 50 reads each: node 1's reads of page 11,
		 * never followed by a write there, stay copies */
		CHECK(tn_counter(js, "migratory_reads") < (long)rounds);
		free(js);
	}
	/* 2 * 50 read-then-writes, plus node 0's 50 writes of page 11 (each
	 * an upgrade: node 1 holds a copy) */
	CHECK(asked >= (long)rounds);
	CHECK(upgrades <= (long)rounds + (long)rounds / 2);
	stop_pair();
}

/* A page granted to a read that asks to write is held for the write that
 * follows: the other node's next request waits HK_MIGRATORY_HOLD_US after
 * the grant (the home counts migratory_holds), and with the knob at 0 none
 * does.  The page hold-down is off, so those are the only holds; the values
 * are checked either way. */
static long migratory_holds_with(const char *hold_us)
{
	setenv("HK_MIGRATORY_HOLD_US", hold_us, 1);
	setenv("HK_PAGE_HOLD_US", "0", 1);
	start_pair("page", 0);
	unsetenv("HK_MIGRATORY_HOLD_US");
	unsetenv("HK_PAGE_HOLD_US");
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	const uint64_t m = 9 * 512;
	for (uint64_t round = 1; round <= 30; round++) {
		CHECK(a[m] == 2 * round - 2);
		a[m] = 2 * round - 1;
		CHECK(b[m] == 2 * round - 1); /* right after node 0's grant */
		b[m] = 2 * round;
	}
	long holds = 0, all = 0, asked = 0;
	for (int k = 0; k < 2; k++) {
		char *js = hk_stats_json(nodes[k]);
		holds += tn_counter(js, "migratory_holds");
		all += tn_counter(js, "page_holds");
		asked += tn_counter(js, "migratory_reads");
		free(js);
	}
	stop_pair();
	CHECK(holds == all);
	CHECK(asked >= 20);
	return holds;
}

static void test_a_page_granted_to_a_migratory_read_waits_for_its_write(void)
{
	CHECK(migratory_holds_with("5000") >= 10);
	CHECK(migratory_holds_with("0") == 0);
}

/* A range homed on node 1 (a guest NUMA node's RAM) is node 1's from the
 * start: its first touch there costs no message, and node 0 gets its data
 * from node 1.  Outside the range the chunks stay striped. */
static void test_a_range_homed_on_a_node_is_local_there(void)
{
	struct hk_config c;
	struct hk_node *lone;
	tn_init_dir(2);
	tn_config(&c, 0, 2, "pair");
	uint8_t *r = tn_region(PAGES);
	CHECK(hk_node_new(&c, &lone) == 0);
	CHECK(hk_region_register(lone, r, PAGES * 4096) == 0);
	CHECK(hk_region_set_home(lone, 0, 4096, 2) == -EINVAL);  /* no node 2 */
	CHECK(hk_region_set_home(lone, 100, 4096, 1) == -EINVAL); /* not aligned */
	CHECK(hk_region_set_home(lone, 0, (PAGES + 1) * 4096, 1) == -EINVAL);
	CHECK(hk_region_set_home(lone, -4096, 4096, 1) == -EINVAL);
	hk_node_free(lone);
	munmap(r, PAGES * 4096);

	start_pair_homed("page", 0, true);
	CHECK(hk_region_set_home(nodes[0], 0, 4096, 1) == -EBUSY);
	for (int p = 0; p < PAGES; p++)
		for (int i = 0; i < 2; i++)
			CHECK(hk_page_home(nodes[i], (uint64_t)p * 4096) == (p < PAGES / 2 ? 1 : p % 2));
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	for (int p = 0; p < PAGES / 2; p++)
		b[p * 512] = (uint64_t)p + 7; /* striped, the even ones were node 0's */
	char *js = hk_stats_json(nodes[1]);
	CHECK(tn_counter(js, "write_stalls") == 0);
	CHECK(tn_counter(js, "zero_fills") == 0);
	free(js);
	for (int p = 0; p < PAGES / 2; p++)
		CHECK(a[p * 512] == (uint64_t)p + 7);
	/* The event thread counts a page just after it wakes the reader, and
	 * read-ahead may bring more than were read. */
	long got = 0;
	for (int tries = 0; tries < 100 && got < PAGES / 2; tries++, usleep(10000)) {
		js = hk_stats_json(nodes[0]);
		got = tn_counter(js, "pages_received");
		free(js);
	}
	CHECK(got >= PAGES / 2);
	stop_pair();
}

struct incr { volatile uint64_t *ctr; int n; };

static void *incr_main(void *arg)
{
	struct incr *in = arg;
	for (int i = 0; i < in->n; i++)
		__atomic_fetch_add(in->ctr, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_atomic_counters_sum_exactly(void)
{
	start_pair("page", 0);
	pthread_t th[4];
	struct incr in[4];
	for (int t = 0; t < 4; t++) {
		in[t].ctr = (uint64_t *)(regions[t % 2] + 7 * 4096 + 64 * (t / 2));
		in[t].n = 2000;
		pthread_create(&th[t], NULL, incr_main, &in[t]);
	}
	for (int t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	uint64_t *c = (uint64_t *)(regions[1] + 7 * 4096);
	CHECK(c[0] == 4000 && c[8] == 4000);
	stop_pair();
}

/* The page hold-down: a page just granted to node 1 for writing stays there
 * for HK_PAGE_HOLD_US before node 0's request takes it (the home counts
 * page_holds), and every write still lands; with no hold-down, nothing
 * waits.  Page 3 is homed on node 1; node 0 writes it first, so node 1's
 * write is a grant that completes at the home.  Node 0's atomic add (a
 * request for writing; a read only asks for a copy, which no hold delays)
 * then meets the hold, unless this machine took longer than the hold to
 * ask (then node 0's add took that long too, which the test tells apart
 * rather than fails on). */
static void held_once(bool hold)
{
	setenv("HK_PAGE_HOLD_US", hold ? "100000" : "0", 1);
	start_pair("page", 0);
	unsetenv("HK_PAGE_HOLD_US");
	volatile uint64_t *a = (uint64_t *)(regions[0] + 3 * 4096),
			  *b = (uint64_t *)(regions[1] + 3 * 4096);
	CHECK(hk_page_home(nodes[0], 3 * 4096) == 1);
	a[0] = 10;
	b[0] = b[0] + 1;
	uint64_t written = hk_now_ns();
	__atomic_fetch_add(a, 1, __ATOMIC_SEQ_CST);
	uint64_t took = hk_now_ns() - written;
	CHECK(a[0] == 12 && b[0] == 12);
	char *js = hk_stats_json(nodes[1]);
	long holds = tn_counter(js, "page_holds");
	free(js);
	if (hold)
		CHECK(holds >= 1 || took >= 90000000);
	else
		CHECK(holds == 0);
	stop_pair();
}

static void test_a_page_just_written_stays_for_its_hold_down(void)
{
	held_once(true);
	held_once(false);
}

/* Under a short hold-down, writers on both nodes still sum exactly. */
static void test_atomic_counters_sum_exactly_under_a_hold_down(void)
{
	setenv("HK_PAGE_HOLD_US", "200", 1);
	test_atomic_counters_sum_exactly();
	unsetenv("HK_PAGE_HOLD_US");
}

/* Node 1 writes page p, node 0 reads it and writes its answer, node 1 reads
 * that, 50 times; returns how many copies the home held back meanwhile. */
static long hand_off(uint64_t p)
{
	volatile uint64_t *x = (uint64_t *)(regions[0] + p * 4096),
			  *y = (uint64_t *)(regions[1] + p * 4096);
	char *js = hk_stats_json(nodes[1]);
	long before = tn_counter(js, "read_holds");
	free(js);
	for (uint64_t k = 1; k <= 50; k++) {
		y[0] = 2 * k;
		CHECK(x[0] == 2 * k);
		x[0] = 2 * k + 1;
		CHECK(y[0] == 2 * k + 1);
	}
	js = hk_stats_json(nodes[1]);
	long held = tn_counter(js, "read_holds") - before;
	free(js);
	return held;
}

/* The read hold: a page whose writer writes again right after a reader took
 * a copy (a seqcount writer under readers that spin) holds the next copies
 * back for HK_READ_HOLD_US; a page handed from one node to the other and
 * back (each writes once, then reads the other's word) never does, and a
 * hand-off on a page marked for bursts clears the mark at once.  Page 3 is
 * homed on node 1 and written there: node 0 reads, node 1 writes again (the
 * burst the home sees), node 0 reads again and meets the hold, unless this
 * machine was so slow that node 1's write came after the window (then the
 * round repeats, at most 20 times).  Every read sees the last write. */
static void read_held_once(bool hold)
{
	/* shorter than the mark's 100 ms memory, so the hand-off below
	 * meets a marked page */
	setenv("HK_READ_HOLD_US", hold ? "20000" : "0", 1);
	setenv("HK_PAGE_HOLD_US", "0", 1);
	start_pair("page", 0);
	unsetenv("HK_READ_HOLD_US");
	unsetenv("HK_PAGE_HOLD_US");
	volatile uint64_t *a = (uint64_t *)(regions[0] + 3 * 4096),
			  *b = (uint64_t *)(regions[1] + 3 * 4096);
	CHECK(hk_page_home(nodes[0], 3 * 4096) == 1);
	long holds = 0;
	for (uint64_t round = 1; round <= 20 && !holds; round++) {
		b[0] = 2 * round;
		CHECK(a[0] == 2 * round);
		b[0] = 2 * round + 1; /* the writer again, right after the copy */
		uint64_t t0 = hk_now_ns();
		CHECK(a[0] == 2 * round + 1);
		char *js = hk_stats_json(nodes[1]);
		holds = tn_counter(js, "read_holds");
		free(js);
		if (hold && !holds && hk_now_ns() - t0 >= 18000000)
			holds = 1; /* held, but this machine is slower than the hold */
	}
	CHECK(hold ? holds >= 1 : holds == 0);
	/* page 3, marked, now handed off: its first copy may wait, no other */
	CHECK(hand_off(3) <= 1);
	/* a fresh page homed on node 1, handed off: never marked, never held */
	uint64_t p = 4;
	while (hk_page_home(nodes[0], p * 4096) != 1)
		p++;
	CHECK(hand_off(p) == 0);
	stop_pair();
}

static void test_a_page_written_in_bursts_holds_its_copies_back(void)
{
	read_held_once(true);
	read_held_once(false);
}

static void test_vcpu_policy_asks_embedder(void)
{
	stall_moves = stall_calls = 0;
	start_pair("vcpu", 0);
	((volatile uint8_t *)regions[0])[9 * 4096] = 1;
	/* a thread that runs no vCPU always gets its page */
	CHECK(((volatile uint8_t *)regions[1])[10 * 4096] == 0);
	CHECK(stall_calls >= 1 && stall_moves == 0);
	/* this one runs vCPU 1: the policy asks for a move to the owner */
	CHECK(hk_thread_set_vcpu(nodes[1], gettid(), 1) == 0);
	CHECK(((volatile uint8_t *)regions[1])[9 * 4096] == 1);
	CHECK(stall_moves >= 1);
	char *js = hk_stats_json(nodes[1]);
	CHECK(strstr(js, "\"policy\":\"vcpu\""));
	CHECK(strstr(js, "\"page.not_a_vcpu\":1,"));
	CHECK(strstr(js, "\"page.embedder\":0,") == NULL);
	free(js);
	stop_pair();
}

static void test_budget_evicts_without_loss(void)
{
	start_pair("page", 4 * 4096);
	for (int p = 0; p < 16; p++)
		((volatile uint64_t *)regions[0])[p * 512] = 1000 + (uint64_t)p;
	usleep(600000); /* a few heartbeats: peers learn budgets, node 0 evicts */
	char *js = hk_stats_json(nodes[0]);
	unsigned long resident = 99;
	const char *r = strstr(js, "\"resident_pages\":");
	if (r)
		resident = strtoul(r + 17, NULL, 10);
	CHECK(resident <= 4);
	CHECK(tn_counter(js, "evictions") >= 12);
	CHECK(tn_counter(js, "pages_sent") >= 12);
	free(js);
	for (int p = 0; p < 16; p++)
		CHECK(((volatile uint64_t *)regions[1])[p * 512] == 1000 + (uint64_t)p);
	stop_pair();
}

/* Refetch: node 1 reads pages 8-23, node 0 rewrites them all (a compactor:
 * each write invalidates node 1's copy), and node 1 reads page 8 again.  With
 * HK_REFETCH=16 the other 15 copies come back alongside it, so reading them
 * costs no stall; with 0 each costs its own.  Rewritten again at once, they
 * are not asked for again.  Every read sees the last write.  Returns node
 * 1's read stalls on pages 9-23 after the first rewrite; -2 if "at once"
 * was too late to tell (the second rewrite began after the 50 ms during
 * which a copy just lost counts as hot, on a loaded host). */
static long reread_after_rewrite(const char *refetch)
{
	setenv("HK_REFETCH", refetch, 1);
	setenv("HK_READAHEAD", "0", 1); /* which would bring 9-23 after 8 anyway */
	setenv("HK_PAGE_HOLD_US", "0", 1);
	setenv("HK_READ_HOLD_US", "0", 1);
	start_pair("page", 0);
	unsetenv("HK_REFETCH");
	unsetenv("HK_READAHEAD");
	unsetenv("HK_PAGE_HOLD_US");
	unsetenv("HK_READ_HOLD_US");
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	for (uint64_t p = 8; p < 24; p++)
		a[p * 512] = p;
	for (uint64_t p = 8; p < 24; p++)
		CHECK(b[p * 512] == p);
	uint64_t first = hk_now_ns();
	for (uint64_t p = 8; p < 24; p++)
		a[p * 512] = 100 + p;
	usleep(2000); /* past the settle time: the writer is done with them */
	char *js = hk_stats_json(nodes[1]);
	long received = tn_counter(js, "pages_received");
	free(js);
	CHECK(b[8 * 512] == 108);
	long refetched = 0;
	for (int i = 0; i < 2000; i++) { /* until the 15 arrived, 2 s at most */
		js = hk_stats_json(nodes[1]);
		refetched = tn_counter(js, "refetches");
		long now = tn_counter(js, "pages_received");
		free(js);
		if (now >= received + 1 + refetched && (refetched == 15 || !atoi(refetch)))
			break;
		usleep(1000);
	}
	CHECK(refetched == (atoi(refetch) ? 15 : 0));
	js = hk_stats_json(nodes[1]);
	long stalls = tn_counter(js, "read_stalls");
	free(js);
	for (uint64_t p = 9; p < 24; p++)
		CHECK(b[p * 512] == 100 + p);
	usleep(20000); /* a stall is counted as it ends, after its thread ran on */
	js = hk_stats_json(nodes[1]);
	stalls = tn_counter(js, "read_stalls") - stalls;
	free(js);
	/* rewritten again at once: copies a writer keeps taking are not
	 * asked for again (they would take its page from it again) */
	for (uint64_t p = 8; p < 24; p++)
		a[p * 512] = 200 + p;
	bool late = hk_now_ns() - first > 40000000ull;
	usleep(2000);
	for (uint64_t p = 8; p < 24; p++)
		CHECK(b[p * 512] == 200 + p);
	js = hk_stats_json(nodes[1]);
	bool asked_again = tn_counter(js, "refetches") != refetched;
	free(js);
	stop_pair();
	if (asked_again && late)
		return -2;
	CHECK(!asked_again);
	return stalls;
}

static void test_copies_a_writer_took_together_come_back_together(void)
{
	long stalls = -2;
	for (int try = 0; try < 5 && stalls == -2; try++)
		stalls = reread_after_rewrite("16");
	CHECK(stalls == 0);
	CHECK(reread_after_rewrite("0") == 15);
}

/* Read copies that come back to back (read-ahead's) go in as runs, in one
 * UFFDIO_COPY each (arrivals.c), and every word read is the one written.
 * Pages [0, PAGES / 2) are homed on node 1, which writes them; node 0 reads
 * them in order, so its second fault starts read-ahead over the rest, whose
 * DATA frames the home sends in one batch. */
static long runs_reading_in_order(void)
{
	start_pair_homed("page", 0, true);
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	for (int p = 0; p < PAGES / 2; p++)
		for (int w = 0; w < 512; w += 64)
			b[p * 512 + w] = (uint64_t)p * 1000 + (uint64_t)w;
	for (int p = 0; p < PAGES / 2; p++)
		for (int w = 0; w < 512; w += 64)
			CHECK(a[p * 512 + w] == (uint64_t)p * 1000 + (uint64_t)w);
	char *js = hk_stats_json(nodes[0]);
	long runs = tn_counter(js, "install_runs");
	CHECK(tn_counter(js, "readaheads") > 0);
	free(js);
	stop_pair();
	return runs;
}

static void test_read_ahead_copies_go_in_as_runs(void)
{
	long runs = 0;
	/* a run needs two frames in one read of the link: almost always so */
	for (int try = 0; try < 5 && runs < 1; try++)
		runs = runs_reading_in_order();
	CHECK(runs >= 1);
}

/* Read-ahead's chain (requester.c): a reader that faulted on two pages in
 * order and then stops reading gets HK_READAHEAD_WINDOWS (default 4) windows
 * of copies, no more.  Each window's middle page, as it arrives, asks for the next window,
 * and the chain then waits for the reader's next fault.  With windows of 4
 * and faults on pages 0 and 1 that is pages 2-17: 16 read-aheads, whatever
 * the timing. */
static void test_read_ahead_chains_windows_up_to_its_bound(void)
{
	setenv("HK_READAHEAD", "4", 1);
	setenv("HK_REFETCH", "0", 1);
	start_pair("page", 0);
	unsetenv("HK_READAHEAD");
	unsetenv("HK_REFETCH");
	volatile uint64_t *a = (uint64_t *)regions[0], *b = (uint64_t *)regions[1];
	for (uint64_t p = 0; p < PAGES; p++)
		b[p * 512 + 5] = 7000 + p;
	CHECK(a[0 * 512 + 5] == 7000);
	CHECK(a[1 * 512 + 5] == 7001);
	long asked = -1, received = -1;
	for (int i = 0; i < 2000; i++) { /* until 16 arrived, 2 s at most */
		char *js = hk_stats_json(nodes[0]);
		asked = tn_counter(js, "readaheads");
		received = tn_counter(js, "pages_received");
		free(js);
		if (received >= 2 + 16)
			break;
		usleep(1000);
	}
	usleep(20000); /* a chain that did not stop would go on meanwhile */
	char *js = hk_stats_json(nodes[0]);
	asked = tn_counter(js, "readaheads");
	received = tn_counter(js, "pages_received");
	free(js);
	CHECK(asked == 16);
	CHECK(received == 2 + 16);
	/* the reader goes on: every word is the one written */
	for (uint64_t p = 0; p < PAGES; p++)
		CHECK(a[p * 512 + 5] == 7000 + p);
	stop_pair();
}

int main(void)
{
	RUN(test_write_here_read_there);
	RUN(test_a_page_written_in_turn_comes_writable_in_one_message);
	RUN(test_a_page_read_then_written_in_turn_comes_writable_at_the_read);
	RUN(test_a_page_granted_to_a_migratory_read_waits_for_its_write);
	RUN(test_a_range_homed_on_a_node_is_local_there);
	RUN(test_atomic_counters_sum_exactly);
	RUN(test_a_page_just_written_stays_for_its_hold_down);
	RUN(test_a_page_written_in_bursts_holds_its_copies_back);
	RUN(test_atomic_counters_sum_exactly_under_a_hold_down);
	RUN(test_vcpu_policy_asks_embedder);
	RUN(test_budget_evicts_without_loss);
	RUN(test_copies_a_writer_took_together_come_back_together);
	RUN(test_read_ahead_copies_go_in_as_runs);
	RUN(test_read_ahead_chains_windows_up_to_its_bound);
	TEST_DONE();
}
