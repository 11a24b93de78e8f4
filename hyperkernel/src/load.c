/* load.c - how busy this node's CPUs are, for the policies: a vCPU moved to
 * a node whose CPUs are all running other vCPUs waits for a CPU there, and
 * on the testbed's nodes (each pinned to host CPUs of its own) it would take
 * the CPU from a vCPU that was running.  Each tick (at most every 100 ms)
 * the node adds up the CPU time its vCPU threads used (schedstat) over the
 * elapsed time, and counts the host CPUs it may run on; the heartbeat
 * carries both to the peers.  It also tells which of its vCPUs keep running
 * (their threads ran half the sample or more): a halted vCPU's thread sleeps,
 * so the others are doing work there, and a swap must not send one of them
 * away (cluster.c, hk_cluster_swap_candidate). */
#include <sched.h>

#include "hk.h"

void hk_load_sample(struct hk_node *n)
{
	uint64_t now = hk_now_ns();
	/* only the moving policies look at it (every node has the same one) */
	if (n->policy == HK_POLICY_PAGE ||
	    (n->load_prev_ns && now - n->load_prev_ns < 100000000ull))
		return;
	uint64_t busy_ns = 0, busy_vcpus = 0, half = (now - n->load_prev_ns) / 2;
	for (int v = 0; v < HK_MAX_VCPUS; v++) {
		pid_t tid = __atomic_load_n(&n->vcpu_tid[v], __ATOMIC_RELAXED);
		if (!tid)
			continue;
		uint64_t run, wait, slices;
		if (!hk_schedstat(tid, &run, &wait, &slices))
			run = 0;
		if (run >= n->load_prev_run[v] && n->load_prev_ns) {
			busy_ns += run - n->load_prev_run[v];
			if (run - n->load_prev_run[v] >= half)
				busy_vcpus |= 1ull << v;
		}
		n->load_prev_run[v] = run;
	}
	if (n->load_prev_ns) {
		n->busy_pct = (uint32_t)(100 * busy_ns / (now - n->load_prev_ns));
		__atomic_store_n(&n->busy_vcpus, busy_vcpus, __ATOMIC_RELAXED);
	}
	n->load_prev_ns = now;
	cpu_set_t set;
	n->host_cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? (uint32_t)CPU_COUNT(&set) : 0;
}
