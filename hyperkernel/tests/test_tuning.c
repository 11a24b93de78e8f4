/* test_tuning.c - every knob is checked against its range when a node starts:
 * a bad value refuses the node (after one line naming the knob), a good one
 * is taken, and the embedder's default scheduling class holds unless
 * HK_EVENT_SCHED says otherwise. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hk.h"
#include "hk_test.h"

static void clear(void)
{
	unsetenv("HK_ADAPTIVE_SPIN");
	unsetenv("HK_FAULT_SPIN_US");
	unsetenv("HK_PEER_SPIN_US");
	unsetenv("HK_EVENT_SCHED");
	unsetenv("HK_HOLD_DOWN_US");
	unsetenv("HK_COST_HYSTERESIS_PCT");
	unsetenv("HK_VCPU_COST_US");
	unsetenv("HK_READAHEAD");
	unsetenv("HK_READAHEAD_WINDOWS");
	unsetenv("HK_REFETCH");
	unsetenv("HK_LINK_CORK");
	unsetenv("HK_PAGE_HOLD_US");
	unsetenv("HK_READ_HOLD_US");
	unsetenv("HK_PARTNER_BOUNCES");
}

static void test_defaults_and_the_embedders_class(void)
{
	struct hk_tuning t;
	clear();
	CHECK(hk_tuning_load(&t, false) == 0);
	CHECK(t.spin_cap_ns == 200000 && t.fault_spin_ns == 20000 && t.peer_spin_ns == 50000);
	CHECK(t.event_sched == HK_SCHED_NORMAL && !t.serve_spin_set);
	CHECK(t.hold_down_ns == 10000000 && t.hysteresis_pct == 25 && t.vcpu_prior_ns == 500000);
	CHECK(t.partner_bounces == 32);
	CHECK(t.readahead == 32 && t.readahead_windows == 4 && t.refetch == 16 && t.cork);
	CHECK(t.page_hold_ns == 1000000 && t.read_hold_ns == 50000);
	CHECK(hk_tuning_load(&t, true) == 0 && t.event_sched == HK_SCHED_FIFO);
	setenv("HK_EVENT_SCHED", "normal", 1);
	CHECK(hk_tuning_load(&t, true) == 0 && t.event_sched == HK_SCHED_NORMAL);
	setenv("HK_EVENT_SCHED", "fifo", 1);
	CHECK(hk_tuning_load(&t, false) == 0 && t.event_sched == HK_SCHED_FIFO);
	setenv("HK_EVENT_SCHED", "auto", 1);
	CHECK(hk_tuning_load(&t, true) == 0 && t.event_sched == HK_SCHED_AUTO);
	clear();
}

static void test_values_in_range_are_taken(void)
{
	struct hk_tuning t;
	clear();
	setenv("HK_FAULT_SPIN_US", "7", 1);
	CHECK(hk_tuning_load(&t, true) == 0 && t.fault_spin_ns == 7000 && t.serve_spin_set);
	setenv("HK_HOLD_DOWN_US", "0", 1); /* "cost" without a hold-down */
	setenv("HK_COST_HYSTERESIS_PCT", "100", 1);
	CHECK(hk_tuning_load(&t, true) == 0 && t.hold_down_ns == 0 && t.hysteresis_pct == 100);
	setenv("HK_ADAPTIVE_SPIN", "0", 1); /* off: nothing spins */
	CHECK(hk_tuning_load(&t, true) == 0 && t.spin_cap_ns == 0 && t.fault_spin_ns == 0);
	setenv("HK_LINK_CORK", "0", 1); /* a write per frame, as before */
	setenv("HK_READAHEAD", "0", 1);
	setenv("HK_REFETCH", "0", 1);
	CHECK(hk_tuning_load(&t, true) == 0 && !t.cork && t.readahead == 0 && t.refetch == 0);
	setenv("HK_PAGE_HOLD_US", "100000", 1); /* the longest hold-down */
	CHECK(hk_tuning_load(&t, true) == 0 && t.page_hold_ns == 100000000);
	setenv("HK_READ_HOLD_US", "0", 1); /* copies never wait */
	CHECK(hk_tuning_load(&t, true) == 0 && t.read_hold_ns == 0);
	setenv("HK_PARTNER_BOUNCES", "1", 1); /* one bounce gathers the writers */
	CHECK(hk_tuning_load(&t, true) == 0 && t.partner_bounces == 1);
	clear();
}

static void test_bad_values_are_refused(void)
{
	static const char *const bad[][2] = {
		{ "HK_ADAPTIVE_SPIN", "100001" }, { "HK_ADAPTIVE_SPIN", "-1" },
		{ "HK_FAULT_SPIN_US", "abc" },    { "HK_PEER_SPIN_US", "" },
		{ "HK_PEER_SPIN_US", "5us" },     { "HK_EVENT_SCHED", "rr" },
		{ "HK_HOLD_DOWN_US", "10000001" }, { "HK_COST_HYSTERESIS_PCT", "1001" },
		{ "HK_VCPU_COST_US", "0" },       { "HK_LINK_CORK", "2" },
		{ "HK_READAHEAD", "65" },         { "HK_PAGE_HOLD_US", "100001" },
		{ "HK_REFETCH", "65" },           { "HK_REFETCH", "x" },
		{ "HK_READ_HOLD_US", "100001" },  { "HK_READ_HOLD_US", "-5" },
		{ "HK_PARTNER_BOUNCES", "0" },    { "HK_PARTNER_BOUNCES", "1000001" },
		{ "HK_READAHEAD_WINDOWS", "0" },  { "HK_READAHEAD_WINDOWS", "17" },
	};
	struct hk_tuning t;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear();
		setenv(bad[i][0], bad[i][1], 1);
		CHECK(hk_tuning_load(&t, true) == -EINVAL);
	}
	clear();
}

static void test_a_bad_knob_refuses_the_node(void)
{
	struct hk_config cfg;
	struct hk_node *n = NULL;
	hk_config_init(&cfg);
	cfg.secret = "s";
	cfg.node_count = 1;
	cfg.node_id = 0;
	setenv("HK_PEER_SPIN_US", "999999999", 1);
	CHECK(hk_node_new(&cfg, &n) == -EINVAL && n == NULL);
	clear();
	/* a fault trace where no file can be made: refused, not run untraced */
	setenv("HK_FAULT_TRACE", "/nonexistent-dir/faults", 1);
	CHECK(hk_node_new(&cfg, &n) == -ENOENT && n == NULL);
	unsetenv("HK_FAULT_TRACE");
	CHECK(hk_node_new(&cfg, &n) == 0 && n != NULL);
	hk_node_free(n);
}

/* hk_set_knob: only a knob that is safe to turn at any moment, only in range */
static void test_a_running_node_takes_only_a_runtime_knob_in_range(void)
{
	struct hk_config cfg;
	struct hk_node *n = NULL;
	char why[160] = "";
	clear();
	hk_config_init(&cfg);
	cfg.secret = "s";
	cfg.node_count = 1;
	cfg.node_id = 0;
	CHECK(hk_node_new(&cfg, &n) == 0);
	CHECK(hk_set_knob(n, "HK_PAGE_HOLD_US", 250, why, sizeof(why)) == 0);
	CHECK(n->tuning.page_hold_ns == 250000);
	CHECK(hk_set_knob(n, "HK_PAGE_HOLD_US", 100001, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "HK_PAGE_HOLD_US") && strstr(why, "0..100000"));
	CHECK(n->tuning.page_hold_ns == 250000);
	CHECK(hk_set_knob(n, "HK_READAHEAD", 4, why, sizeof(why)) == -ENOENT);
	CHECK(strstr(why, "HK_READAHEAD") && strstr(why, "HK_PAGE_HOLD_US") &&
	      strstr(why, "HK_READ_HOLD_US"));
	CHECK(hk_set_knob(n, "HK_READ_HOLD_US", 0, why, sizeof(why)) == 0);
	CHECK(n->tuning.read_hold_ns == 0 && n->tuning.page_hold_ns == 250000);
	CHECK(hk_set_knob(n, "HK_READ_HOLD_US", 100001, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "HK_READ_HOLD_US=100001") && strstr(why, "0..100000"));
	hk_node_free(n);
}

/* HK_EVENT_SCHED=auto: the event thread runs in the normal class, goes
 * SCHED_FIFO when a vCPU spins (hk_vcpu_spinning, once however often it is
 * called), and back 50 ms after the last spin; fifo and normal never change. */
static void test_the_auto_class_follows_spinning_vcpus(void)
{
	if (geteuid() != 0) {
		printf("  (skipped: SCHED_FIFO needs root)\n");
		return;
	}
	static const char *const classes[] = { "auto", "normal", "fifo" };
	for (int c = 0; c < 3; c++) {
		struct hk_config cfg;
		struct hk_node *n = NULL;
		clear();
		setenv("HK_EVENT_SCHED", classes[c], 1);
		hk_config_init(&cfg);
		cfg.secret = "s";
		cfg.node_count = 1;
		cfg.node_id = 0;
		cfg.heartbeat_ms = 10; /* its timer wakes the event thread */
		uint8_t *region = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(hk_node_new(&cfg, &n) == 0 && hk_region_register(n, region, 16 * 4096) == 0);
		CHECK(hk_node_start(n) == 0);
		for (int i = 0; i < 1000 && !n->stats.event_tid; i++)
			usleep(1000);
		pid_t tid = n->stats.event_tid;
		int first = c == 2 ? SCHED_FIFO : SCHED_OTHER;
		for (int i = 0; i < 1000 && sched_getscheduler(tid) != first; i++)
			usleep(1000);
		CHECK(sched_getscheduler(tid) == first);
		hk_vcpu_spinning(n);
		hk_vcpu_spinning(n);
		CHECK(sched_getscheduler(tid) == (c == 1 ? SCHED_OTHER : SCHED_FIFO));
		CHECK(n->stats.node.event_rt_switches == (c == 0 ? 1u : 0u));
		for (int i = 0; i < 200 && sched_getscheduler(tid) != first; i++)
			usleep(5000);
		CHECK(sched_getscheduler(tid) == first);
		hk_node_shutdown(n);
		hk_node_free(n);
		munmap(region, 16 * 4096);
	}
	clear();
}

int main(void)
{
	RUN(test_defaults_and_the_embedders_class);
	RUN(test_values_in_range_are_taken);
	RUN(test_bad_values_are_refused);
	RUN(test_a_bad_knob_refuses_the_node);
	RUN(test_a_running_node_takes_only_a_runtime_knob_in_range);
	RUN(test_the_auto_class_follows_spinning_vcpus);
	TEST_DONE();
}
