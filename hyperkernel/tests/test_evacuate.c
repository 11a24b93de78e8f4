/* test_evacuate.c - a node leaves a running two-node cluster over real
 * sockets and userfaultfd: its vCPU moves (the test plays the embedder), the
 * pages it wrote and the directory it kept go to node 0, which then reads
 * and writes every page; a second evacuation, one during another and one of
 * the last node are refused with a reason. */
#include <poll.h>
#include <sys/wait.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

#define PAGES 64

static struct hk_node *me;
static uint8_t *ram;
static volatile int evac_phase = -1, arrived = -1, move_vcpu = -1, move_to = -1;
static int go[2]; /* node 0 -> node 1: "checked, move your vCPU now" */

/* The library asks (and asks again each second): the embedder's own thread
 * moves it, as QEMU's vCPU thread does; the event thread never waits. */
static void on_migrate(void *o, int from, uint32_t vcpu, int target)
{
	(void)o;
	(void)from;
	move_to = target;
	move_vcpu = (int)vcpu;
}

static void on_vcpu(void *o, int from, uint32_t vcpu, const void *blob, size_t len)
{
	(void)o;
	(void)from;
	(void)blob;
	(void)len;
	arrived = (int)vcpu;
}

static void on_evacuation(void *o, const struct hk_evac_status *st)
{
	(void)o;
	evac_phase = st->phase;
}

static struct hk_node *start(int id)
{
	struct hk_config c;
	struct hk_node *n;
	tn_config(&c, id, 2, "e");
	c.cb.on_migrate_request = on_migrate;
	c.cb.on_vcpu_receive = on_vcpu;
	c.cb.on_evacuation = on_evacuation;
	ram = tn_region(PAGES);
	if (!ram || hk_node_new(&c, &n) < 0 || hk_region_register(n, ram, PAGES * 4096) < 0 ||
	    hk_node_start(n) < 0)
		return NULL;
	struct hk_machine m = { .vcpus = 2, .vcpu_mask = 1ull << id };
	memset(m.hash, 0xee, sizeof(m.hash));
	char why[256];
	if (hk_cluster_agree(n, &m, why, sizeof(why)) < 0)
		return NULL;
	return n;
}

static bool wait_for(volatile int *v, int want, int tenths)
{
	for (int i = 0; i < tenths * 10; i++) {
		if (*v == want)
			return true;
		usleep(10000);
	}
	return false;
}

/* Node 1: write the odd pages (it is home for them: chunk 1), read the even
 * ones, then leave. */
static void child(void)
{
	me = start(1);
	if (!me)
		_exit(2);
	for (int p = 1; p < PAGES; p += 2)
		memset(ram + p * 4096, 0x40 + p, 4096);
	volatile uint8_t sum = 0;
	for (int p = 0; p < PAGES; p += 2)
		sum += ram[p * 4096];
	char why[256] = "";
	if (hk_evacuate(me, "test", why, sizeof(why)) != 0)
		_exit(3);
	if (hk_evacuate(me, "again", why, sizeof(why)) != -EBUSY || !strstr(why, "already"))
		_exit(4);
	/* the vCPU moves once node 0 has checked that a second evacuation is
	 * refused while this one runs */
	struct pollfd pfd = { .fd = go[0], .events = POLLIN };
	char c;
	if (poll(&pfd, 1, 30000) != 1 || read(go[0], &c, 1) != 1)
		_exit(7);
	for (int i = 0; i < 3000 && move_vcpu < 0; i++)
		usleep(10000);
	if (move_vcpu < 0 || hk_vcpu_send(me, move_to, (uint32_t)move_vcpu, "state", 5) < 0)
		_exit(8);
	if (!wait_for(&evac_phase, HK_EVAC_DONE, 300))
		_exit(5);
	struct hk_evac_status st;
	hk_evac_status_get(me, &st);
	if (st.pages_left != 0 || st.homes_moved == 0 || st.vcpus_moved != 1)
		_exit(6);
	hk_node_free(me);
	_exit(0);
}

static void test_a_node_leaves_and_its_pages_and_homes_stay_in_the_cluster(void)
{
	tn_init_dir(2);
	CHECK(pipe(go) == 0);
	pid_t pid = fork();
	if (pid == 0)
		child();
	me = start(0);
	CHECK(me != NULL);
	for (int p = 0; p < PAGES; p += 2)
		memset(ram + p * 4096, 0x20 + p, 4096);
	/* node 1 starts leaving: another evacuation is refused meanwhile */
	struct hk_evac_status es = { .node = -1 };
	for (int i = 0; i < 1000 && es.node != 1; i++) {
		usleep(10000);
		hk_evac_status_get(me, &es);
	}
	CHECK(es.node == 1 && es.phase == HK_EVAC_VCPUS);
	char why[256] = "";
	int r = hk_evacuate(me, "test", why, sizeof(why));
	CHECK(r == -EBUSY && strstr(why, "node 1 is evacuating"));
	CHECK(write(go[1], "g", 1) == 1);
	CHECK(wait_for(&arrived, 1, 300)); /* its vCPU comes here */
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fprintf(stderr, "  leaver exited with status %d\n", WEXITSTATUS(st));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* every page is here now (a fault would have nowhere to go) */
	for (int p = 0; p < PAGES; p++) {
		uint8_t want = (uint8_t)(p % 2 ? 0x40 + p : 0x20 + p);
		CHECK(ram[p * 4096] == want && ram[p * 4096 + 4095] == want);
	}
	for (int p = 0; p < PAGES; p++)
		CHECK(hk_page_home(me, (uint64_t)p * 4096) == 0);
	memset(ram, 0x77, PAGES * 4096); /* and writable */
	CHECK(hk_vcpu_location(me, 1) == 0);
	r = hk_evacuate(me, "test", why, sizeof(why));
	CHECK(r == -EINVAL && strstr(why, "last node"));
	char *js = hk_stats_json(me);
	CHECK(js && strstr(js, "\"phase\":\"done\"") && strstr(js, "\"gone_nodes\":2"));
	CHECK(tn_counter(js, "malformed_messages") == 0);
	free(js);
	hk_node_free(me);
}

int main(void)
{
	RUN(test_a_node_leaves_and_its_pages_and_homes_stay_in_the_cluster);
	printf("%d passed, %d failed\n", hk_t_passed, hk_t_failed);
	return hk_t_failed ? 1 : 0;
}
