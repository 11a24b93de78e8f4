/* test_cluster.c - two node processes agree on the machine (or refuse with a
 * reason), keep the vCPU location directory, forward interrupts and
 * migration requests to wherever a vCPU runs, and hold the stopped barrier.
 * The cluster messages themselves are checked in test_msg and fuzzed. */
#include <sys/wait.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

static struct hk_node *me;
static volatile int irq_vec = -1, irq_vcpu = -1, migrate_vcpu = -1, migrate_target = -1;
static volatile int arrived = -1;

static void on_irq(void *o, int from, const struct hk_irq *irq)
{
	(void)o;
	(void)from;
	irq_vcpu = (int)irq->vcpu;
	irq_vec = irq->vector;
}

static void on_migrate(void *o, int from, uint32_t vcpu, int target)
{
	(void)o;
	(void)from;
	migrate_vcpu = (int)vcpu;
	migrate_target = target;
}

static void on_vcpu(void *o, int from, uint32_t vcpu, const void *blob, size_t len)
{
	(void)o;
	(void)from;
	(void)blob;
	(void)len;
	arrived = (int)vcpu;
}

static void machine(struct hk_machine *m, uint8_t hash_byte, uint64_t mask)
{
	memset(m, 0, sizeof(*m));
	memset(m->hash, hash_byte, sizeof(m->hash));
	m->vcpus = 2;
	m->vcpu_mask = mask;
}

static struct hk_node *start(int id, uint64_t budget)
{
	struct hk_config c;
	struct hk_node *n;
	tn_config(&c, id, 2, "c");
	c.budget_bytes = budget;
	c.cb.on_irq = on_irq;
	c.cb.on_migrate_request = on_migrate;
	c.cb.on_vcpu_receive = on_vcpu;
	uint8_t *r = tn_region(4);
	if (hk_node_new(&c, &n) < 0 || hk_region_register(n, r, 4 * 4096) < 0 || hk_node_start(n) < 0)
		return NULL;
	return n;
}

static bool wait_for(volatile int *v, int want)
{
	for (int i = 0; i < 300; i++) {
		if (*v == want)
			return true;
		usleep(10000);
	}
	return false;
}

/* Node 1 in a child: placement and hash as told; then it plays the peer. */
static void child(uint8_t hash_byte, uint64_t mask, uint64_t budget, bool scenario)
{
	me = start(1, budget);
	if (!me)
		_exit(2);
	struct hk_machine m;
	machine(&m, hash_byte, mask);
	char why[256];
	int r = hk_cluster_agree(me, &m, why, sizeof(why));
	if (!scenario) {
		hk_node_free(me);
		_exit(r == 0 ? 0 : 7);
	}
	if (r)
		_exit(3);
	/* vCPU 1 runs here; node 0 forwards an interrupt for it, after three
	 * malformed frames that must be refused without dropping the link */
	if (!wait_for(&irq_vec, 0x31) || irq_vcpu != 1)
		_exit(4);
	char *js = hk_stats_json(me);
	long bad = tn_counter(js, "malformed_messages");
	free(js);
	if (bad != 3)
		_exit(9);
	/* a migration request sent to node 0 for vCPU 1 comes here */
	if (!wait_for(&migrate_vcpu, 1) || migrate_target != 0)
		_exit(5);
	/* move it: node 0 learns the new location */
	if (hk_vcpu_send(me, 0, 1, "state", 5) < 0 || hk_vcpu_location(me, 1) != 0)
		_exit(6);
	if (hk_stopped_barrier(me, 3000) < 0)
		_exit(8);
	hk_node_free(me);
	_exit(0);
}

static int parent_refusal(uint8_t hash_byte, uint64_t mask, uint64_t budget, const char *word)
{
	tn_init_dir(2);
	pid_t pid = fork();
	if (pid == 0)
		child(hash_byte, mask, budget, false);
	me = start(0, budget);
	CHECK(me != NULL);
	struct hk_machine m;
	machine(&m, 0xaa, 1);
	char why[256] = "";
	int r = hk_cluster_agree(me, &m, why, sizeof(why));
	CHECK(r == -EINVAL);
	if (!strstr(why, word))
		fprintf(stderr, "  refusal said: %s (expected '%s')\n", why, word);
	CHECK(strstr(why, word) != NULL);
	int st;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7); /* the peer refuses too */
	hk_node_free(me);
	return r;
}

static void test_a_different_machine_is_refused_with_its_node(void)
{
	parent_refusal(0xbb, 2, 0, "node 1 has a different machine definition");
}

static void test_a_vcpu_on_two_nodes_is_refused(void)
{
	parent_refusal(0xaa, 3, 0, "vCPU 0 is placed on node 1 and on another node");
}

static void test_a_vcpu_on_no_node_is_refused(void)
{
	parent_refusal(0xaa, 0, 0, "vCPU 1 is placed on no node");
}

static void test_budgets_smaller_than_guest_ram_are_refused(void)
{
	parent_refusal(0xaa, 2, 4096, "less than the guest RAM");
}

static void test_locations_interrupts_and_migration_requests_follow_the_vcpu(void)
{
	tn_init_dir(2);
	pid_t pid = fork();
	if (pid == 0)
		child(0xaa, 2, 0, true);
	me = start(0, 0);
	CHECK(me != NULL);
	struct hk_machine m;
	machine(&m, 0xaa, 1);
	char why[256];
	CHECK(hk_cluster_agree(me, &m, why, sizeof(why)) == 0);
	CHECK(hk_vcpu_location(me, 0) == 0 && hk_vcpu_location(me, 1) == 1);
	CHECK(hk_vcpu_home(me, 1) == 1);
	/* Frames with a sound header but an unknown type, a field out of range
	 * and another protocol version: each is counted and refused, and the
	 * link (and the interrupt behind them) survives. */
	uint8_t raw[3][64];
	size_t rawlen[3];
	struct hk_msg eoi = { .type = HK_MSG_EOI, .arg = { 7 } };
	rawlen[0] = hk_msg_encode(&eoi, raw[0], sizeof(raw[0]));
	raw[0][6] = 200; /* type */
	struct hk_msg bad_irq = { .type = HK_MSG_IRQ, .vcpu = 1, .arg = { 0, 300, 0 } };
	rawlen[1] = hk_msg_encode(&bad_irq, raw[1], sizeof(raw[1]));
	rawlen[2] = hk_msg_encode(&eoi, raw[2], sizeof(raw[2]));
	raw[2][4] = HK_PROTOCOL_VERSION + 1;
	struct hk_link *l = &me->links[1];
	pthread_mutex_lock(&l->lock);
	for (int i = 0; i < 3; i++)
		CHECK(hk_fd_write_all(l->fd, raw[i], rawlen[i]) == 0);
	pthread_mutex_unlock(&l->lock);
	struct hk_irq irq = { .vcpu = 1, .delivery_mode = 0, .vector = 0x31, .trigger_mode = 0 };
	CHECK(hk_irq_send(me, &irq) == 0);
	struct hk_irq bad = { .vcpu = HK_MAX_VCPUS };
	CHECK(hk_irq_send(me, &bad) == -EINVAL);
	struct hk_irq bad_vec = { .vcpu = 1, .vector = 256 };
	CHECK(hk_irq_send(me, &bad_vec) == -EINVAL);
	struct hk_irq bad_mode = { .vcpu = 1, .delivery_mode = 8, .vector = 32 };
	CHECK(hk_irq_send(me, &bad_mode) == -EINVAL);
	CHECK(hk_vcpu_migrate_request(me, 0, 1) == 1); /* runs here: ours to move */
	CHECK(hk_vcpu_migrate_request(me, 2, 0) == -EINVAL);
	CHECK(hk_vcpu_migrate_request(me, 1, 9) == -EINVAL);
	CHECK(hk_vcpu_migrate_request(me, 1, 0) == 0); /* forwarded to node 1 */
	CHECK(wait_for(&arrived, 1));
	CHECK(hk_vcpu_location(me, 1) == 0);
	CHECK(hk_vcpu_home(me, 1) == 1); /* its home travelled with it */
	CHECK(hk_stopped_barrier(me, 3000) == 0);
	char *js = hk_stats_json(me);
	CHECK(tn_counter(js, "irqs_forwarded") == 1);
	CHECK(tn_counter(js, "migrate_requests_forwarded") == 1);
	free(js);
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fprintf(stderr, "  peer exited with status %d\n", WEXITSTATUS(st));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	hk_node_free(me);
}

/* A node home to more vCPUs than its CPUs (two moves crossed) sends one
 * that settled there to the node with the most room, once per tick, and
 * never a fixed vCPU or one that just arrived.  One node, not started: the
 * tick only reads the homes and asks its embedder to move a vCPU. */
static void test_an_overfull_node_sends_a_settled_vcpu_where_there_is_room(void)
{
	tn_init_dir(3);
	struct hk_config c;
	struct hk_node *n;
	tn_config(&c, 0, 3, "c");
	c.policy = "vcpu";
	c.fixed_vcpus = 1; /* vCPU 0 stays on node 0 */
	c.cb.on_migrate_request = on_migrate;
	CHECK(hk_node_new(&c, &n) == 0);
	struct hk_cluster *cl = &n->cluster;
	uint64_t now = hk_now_ns();
	cl->vcpus = 6;
	static const int8_t homes[6] = { 0, 0, 0, 1, 1, 2 };
	for (int v = 0; v < 6; v++) {
		cl->home[v] = cl->location[v] = homes[v];
		cl->moved_ns[v] = now; /* all just moved */
	}
	for (int k = 0; k < 3; k++) {
		cl->capacity[k] = 2;
		n->links[k].up = k != 0;
	}
	migrate_vcpu = migrate_target = -1;
	/* node 2 has room, but every vCPU that could go arrived a moment ago */
	hk_cluster_capacity_tick(n);
	CHECK(migrate_vcpu == -1 && n->stats.node.overfull_ticks == 1);
	cl->moved_ns[2] = now - 1000000000ull; /* vCPU 2 has settled */
	hk_cluster_capacity_tick(n);
	CHECK(migrate_vcpu == 2 && migrate_target == 2);
	CHECK(hk_vcpu_home(n, 2) == 2 && n->stats.node.capacity_moves == 1);
	/* counted there from now on: full, not overfull */
	migrate_vcpu = -1;
	hk_cluster_capacity_tick(n);
	CHECK(migrate_vcpu == -1 && n->stats.node.overfull_ticks == 2);
	/* overfull again, and no node has room: nothing moves */
	cl->home[2] = cl->location[2] = 0;
	cl->capacity[2] = 1;
	hk_cluster_capacity_tick(n);
	CHECK(migrate_vcpu == -1 && n->stats.node.overfull_ticks == 3);
	/* the fixed vCPU never goes, even settled */
	cl->capacity[2] = 2;
	cl->moved_ns[0] = cl->moved_ns[1] = cl->moved_ns[2] = now;
	cl->moved_ns[0] = 0;
	hk_cluster_capacity_tick(n);
	CHECK(migrate_vcpu == -1);
	for (int k = 0; k < 3; k++)
		n->links[k].up = false;
	hk_node_free(n);
}

int main(void)
{
	RUN(test_a_different_machine_is_refused_with_its_node);
	RUN(test_a_vcpu_on_two_nodes_is_refused);
	RUN(test_a_vcpu_on_no_node_is_refused);
	RUN(test_budgets_smaller_than_guest_ram_are_refused);
	RUN(test_locations_interrupts_and_migration_requests_follow_the_vcpu);
	RUN(test_an_overfull_node_sends_a_settled_vcpu_where_there_is_room);
	TEST_DONE();
}
