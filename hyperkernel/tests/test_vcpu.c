/* test_vcpu.c - opaque vCPU blobs travel between two node processes intact,
 * in both directions, and are counted. */
#include <sys/wait.h>

#include "hk.h"
#include "hk_test.h"
#include "test_node_util.h"

#define BLOB 6400

static volatile int got;
static uint8_t reply[BLOB];
static struct hk_node *me;

static void fill(uint8_t *b, uint32_t seed)
{
	for (int i = 0; i < BLOB; i++)
		b[i] = (uint8_t)(i * 31 + seed);
}

/* Node 1: check the blob, send it back transformed. */
static void on_recv_child(void *opaque, int from, uint32_t vcpu, const void *blob, size_t len)
{
	(void)opaque;
	uint8_t want[BLOB];
	fill(want, vcpu);
	if (from != 0 || len != BLOB || memcmp(blob, want, BLOB))
		_exit(5);
	fill(reply, vcpu + 1);
	if (hk_vcpu_send(me, 0, vcpu + 1, reply, BLOB) < 0)
		_exit(6);
	got = 1;
}

static void on_recv_parent(void *opaque, int from, uint32_t vcpu, const void *blob, size_t len)
{
	(void)opaque;
	uint8_t want[BLOB];
	fill(want, vcpu);
	got = (from == 1 && vcpu == 8 && len == BLOB && !memcmp(blob, want, BLOB)) ? 1 : -1;
}

static void test_blob_round_trip_between_processes(void)
{
	tn_init_dir(2);
	pid_t pid = fork();
	if (pid == 0) {
		struct hk_config c;
		tn_config(&c, 1, 2, "v");
		c.cb.on_vcpu_receive = on_recv_child;
		uint8_t *r = tn_region(2);
		if (hk_node_new(&c, &me) < 0 || hk_region_register(me, r, 2 * 4096) < 0 ||
		    hk_node_start(me) < 0)
			_exit(2);
		for (int i = 0; i < 300 && !got; i++)
			usleep(10000);
		usleep(100000);
		hk_node_free(me);
		_exit(got ? 0 : 3);
	}
	struct hk_config c;
	tn_config(&c, 0, 2, "v");
	c.cb.on_vcpu_receive = on_recv_parent;
	uint8_t *r = tn_region(2), blob[BLOB];
	CHECK(hk_node_new(&c, &me) == 0);
	CHECK(hk_region_register(me, r, 2 * 4096) == 0);
	CHECK(hk_node_start(me) == 0);
	fill(blob, 7);
	CHECK(hk_vcpu_send(me, 1, 7, blob, BLOB) == 0);
	CHECK(hk_vcpu_send(me, 0, 7, blob, BLOB) == -EINVAL); /* not to ourselves */
	CHECK(hk_vcpu_send(me, 1, 7, blob, HK_VCPU_BLOB_MAX + 1) == -EMSGSIZE);
	for (int i = 0; i < 300 && !got; i++)
		usleep(10000);
	CHECK(got == 1);
	char *js = hk_stats_json(me);
	CHECK(strstr(js, "\"vcpu_blobs_sent\":1,\"vcpu_blobs_received\":1"));
	free(js);
	int st;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	hk_node_free(me);
}

int main(void)
{
	RUN(test_blob_round_trip_between_processes);
	TEST_DONE();
}
