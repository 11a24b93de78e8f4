/* test_join.c - a node joins a running two-node cluster over real sockets
 * and userfaultfd, in a third slot: one with another machine definition and
 * one with an older protocol are refused and the cluster runs on; the next is taken in, gets a share of the
 * homes from both nodes, reads what they wrote, writes, and then leaves by
 * evacuation, leaving every page readable on node 0; a survivor that then
 * says it died is believed.  A joiner's
 * configuration that names a starting slot is refused before it dials. */
#include <poll.h>
#include <sys/wait.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

#define PAGES 64

static uint8_t *ram;
static int done_pipe[2]; /* parent -> node 1: "finish" */
static volatile int lost_node = -1;

static void on_peer_lost(void *o, int node, const struct hk_page_range *ranges, size_t nranges,
			 uint64_t pages)
{
	(void)o;
	(void)ranges;
	(void)nranges;
	(void)pages;
	lost_node = node;
}

static struct hk_node *start_v(int id, bool join, uint8_t hash_byte, int version, char *why,
			       size_t whylen)
{
	struct hk_config c;
	struct hk_node *n;
	tn_config(&c, id, 3, "j");
	c.initial_nodes = 2;
	c.join = join;
	c.protocol_version = version;
	c.cb.on_peer_lost = on_peer_lost;
	ram = tn_region(PAGES);
	if (!ram || hk_node_new(&c, &n) < 0)
		return NULL;
	int r = hk_region_register(n, ram, PAGES * 4096);
	if (r == 0)
		r = hk_node_start(n);
	if (r < 0) {
		snprintf(why, whylen, "start: %s", strerror(-r)); /* EBUSY: try again */
		hk_node_free(n);
		return NULL;
	}
	struct hk_machine m = { .vcpus = 2, .vcpu_mask = join ? 0 : 1ull << id };
	memset(m.hash, hash_byte, sizeof(m.hash));
	if (hk_cluster_agree(n, &m, why, whylen) < 0) {
		hk_node_free(n);
		return NULL;
	}
	return n;
}

static struct hk_node *start(int id, bool join, uint8_t hash_byte, char *why, size_t whylen)
{
	return start_v(id, join, hash_byte, 0, why, whylen);
}

static uint8_t value(int p, int round)
{
	return (uint8_t)(round * 0x40 + p);
}

/* Node 1: writes the odd pages, then waits until told to finish, by saying
 * that node 2 died: as a survivor does that did not hear node 2's BYE (the
 * leaver was killed with its last frames to us still queued). */
static void node1(void)
{
	char why[256];
	struct hk_node *n = start(1, false, 0xee, why, sizeof(why));
	if (!n)
		_exit(2);
	for (int p = 1; p < PAGES; p += 2)
		memset(ram + p * 4096, value(p, 1), 4096);
	struct pollfd pfd = { .fd = done_pipe[0], .events = POLLIN };
	char c;
	if (poll(&pfd, 1, 60000) != 1 || read(done_pipe[0], &c, 1) != 1)
		_exit(3);
	struct hk_msg m = { .type = HK_MSG_PEER_LOST, .node = 2 };
	if (hk_node_send(n, 0, &m) < 0)
		_exit(4);
	hk_node_free(n);
	_exit(0);
}

/* A joiner does as the refusal says when the cluster is busy (still
 * starting, under load): it tries again. */
static struct hk_node *start_when_not_busy(int id, uint8_t hash_byte, char *why, size_t whylen)
{
	for (int i = 0;; i++) {
		why[0] = 0;
		struct hk_node *n = start(id, true, hash_byte, why, whylen);
		if (n || !strstr(why, "busy") || i == 100)
			return n;
		usleep(100000);
	}
}

/* A joiner with another machine: refused, with the reason. */
static void wrong_joiner(void)
{
	char why[256] = "";
	struct hk_node *n = start_when_not_busy(2, 0xdd, why, sizeof(why));
	_exit(!n && strstr(why, "different machine definition") ? 0 : 4);
}

/* A joiner that speaks an older protocol: refused at the handshake. */
static void old_joiner(void)
{
	char why[256] = "";
	struct hk_node *n = start_v(2, true, 0xee, HK_PROTOCOL_VERSION - 1, why, sizeof(why));
	_exit(n ? 11 : 0);
}

static long member(const char *js, const char *name)
{
	return tn_counter(js, name);
}

/* The joiner: takes its homes, reads, writes every fourth page, leaves. */
static void joiner(void)
{
	char why[256] = "";
	struct hk_node *n = start_when_not_busy(2, 0xee, why, sizeof(why));
	if (!n)
		_exit(5);
	long given = 0;
	for (int i = 0; i < 3000 && given != 3; i++) {
		char *js = hk_stats_json(n);
		given = member(js, "homes_given");
		free(js);
		usleep(10000);
	}
	if (given != 3)
		_exit(6);
	int homes = 0;
	for (int p = 0; p < PAGES; p++)
		homes += hk_page_home(n, (uint64_t)p * 4096) == 2;
	/* a third of each node's pages: 10 of 32, twice */
	if (homes < 16 || homes > 24)
		_exit(7);
	for (int p = 0; p < PAGES; p++)
		if (ram[p * 4096] != value(p, p % 2) || ram[p * 4096 + 4095] != value(p, p % 2))
			_exit(8);
	for (int p = 0; p < PAGES; p += 4)
		memset(ram + p * 4096, value(p, 2), 4096);
	if (hk_evacuate(n, "test", why, sizeof(why)) != 0)
		_exit(9);
	struct hk_evac_status st = { 0 };
	for (int i = 0; i < 3000 && st.phase != HK_EVAC_DONE; i++) {
		usleep(10000);
		hk_evac_status_get(n, &st);
	}
	if (st.phase != HK_EVAC_DONE || st.pages_left || !st.homes_moved)
		_exit(10);
	hk_node_free(n);
	_exit(0);
}

/* Every process is forked before node 0 starts its threads (a fork of a
 * threaded process may inherit a lock held by another thread, as malloc's,
 * and hang); a joiner then waits for its turn on a pipe. */
struct child {
	pid_t pid;
	int go; /* write end */
};

static struct child spawn(void (*fn)(void))
{
	int p[2];
	if (pipe(p) != 0)
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		close(p[1]);
		char c;
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		if (poll(&pfd, 1, 120000) != 1 || read(p[0], &c, 1) != 1)
			_exit(20);
		fn();
	}
	close(p[0]);
	return (struct child){ pid, p[1] };
}

static void go(struct child c)
{
	if (write(c.go, "g", 1) != 1)
		abort();
	close(c.go);
}

static int wait_child(pid_t pid)
{
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static void test_nodes_join_a_running_cluster_and_leave(void)
{
	tn_init_dir(3);
	CHECK(pipe(done_pipe) == 0);
	pid_t p1 = fork();
	if (p1 == 0)
		node1();
	struct child bad = spawn(wrong_joiner), old = spawn(old_joiner), good = spawn(joiner);
	char why[256];
	struct hk_node *me = start(0, false, 0xee, why, sizeof(why));
	CHECK(me != NULL);
	for (int p = 0; p < PAGES; p += 2)
		memset(ram + p * 4096, value(p, 0), 4096);

	go(bad);
	CHECK(wait_child(bad.pid) == 0);
	go(old);
	CHECK(wait_child(old.pid) == 0);
	char *js = hk_stats_json(me);
	CHECK(member(js, "present_nodes") == 3 && !hk_node_failed(me));
	free(js);

	go(good);
	int rc = wait_child(good.pid);
	if (rc)
		fprintf(stderr, "  joiner exited with status %d\n", rc);
	CHECK(rc == 0);
	CHECK(!hk_node_failed(me));
	js = hk_stats_json(me);
	CHECK(member(js, "present_nodes") == 3 && member(js, "gone_nodes") == 4);
	/* one frame: the old-protocol joiner's hello (a link error, as from any stranger) */
	CHECK(member(js, "malformed_messages") == 1);
	free(js);
	/* every page here, as the joiner left it */
	for (int p = 0; p < PAGES; p++) {
		uint8_t want = p % 4 == 0 ? value(p, 2) : value(p, p % 2);
		CHECK(ram[p * 4096] == want && ram[p * 4096 + 4095] == want);
		CHECK(hk_page_home(me, (uint64_t)p * 4096) != 2);
	}
	/* Node 2 left cleanly here; node 1 says it died: the guest cannot go
	 * on, and node 0 must name node 2, not node 1 when it goes. */
	CHECK(lost_node == -1 && !hk_node_failed(me));
	CHECK(write(done_pipe[1], "d", 1) == 1);
	CHECK(wait_child(p1) == 0);
	for (int i = 0; i < 500 && lost_node < 0; i++)
		usleep(10000);
	CHECK(lost_node == 2 && hk_node_failed(me));
	hk_node_free(me);
}

static void test_a_joiner_must_take_a_slot_above_the_starting_nodes(void)
{
	struct hk_config c;
	struct hk_node *n = NULL;
	tn_init_dir(3);
	tn_config(&c, 1, 3, "j");
	c.initial_nodes = 2;
	c.join = true;
	CHECK(hk_node_new(&c, &n) == -EINVAL);
	c.node_id = 2;
	c.join = false; /* a slot is for a joiner */
	CHECK(hk_node_new(&c, &n) == -EINVAL);
	c.initial_nodes = 4;
	CHECK(hk_node_new(&c, &n) == -EINVAL);
}

int main(void)
{
	RUN(test_a_joiner_must_take_a_slot_above_the_starting_nodes);
	RUN(test_nodes_join_a_running_cluster_and_leave);
	printf("%d passed, %d failed\n", hk_t_passed, hk_t_failed);
	return hk_t_failed ? 1 : 0;
}
