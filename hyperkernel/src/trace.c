/* trace.c - the fault trace.  With HK_FAULT_TRACE=PREFIX in its environment a
 * node writes PREFIX.nodeN: one line for each stall one of its threads
 * waited out, so that the simulation can replay what a guest did under any
 * policy, without QEMU (tests/sim, "hk-sim --trace").
 *
 *   # hk fault trace 1 node=N nodes=M
 *   # vcpus=V            (the guest's, at the first stall)
 *   t0_ns wait_ns vcpu page_hex r|w u|k guest_thread_hex home
 *
 * t0 is CLOCK_MONOTONIC when the fault reached the event thread, so the
 * nodes of one host (the testbed) share a clock; vcpu is -1 for a thread
 * that runs none (device emulation).  Only the event thread writes, through
 * a buffered stream, flushed when the node is freed: a node that crashes
 * loses its last lines, never the order of the others. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk.h"

int hk_trace_open(struct hk_node *n)
{
	const char *prefix = getenv("HK_FAULT_TRACE");
	if (!prefix || !*prefix)
		return 0;
	char path[4096];
	if (snprintf(path, sizeof(path), "%s.node%d", prefix, n->self) >= (int)sizeof(path)) {
		hk_warn("HK_FAULT_TRACE=%s is too long a path", prefix);
		return -EINVAL;
	}
	n->trace = fopen(path, "w");
	if (!n->trace) {
		int e = errno;
		hk_warn("HK_FAULT_TRACE: cannot create %s: %s (the directory must exist and be "
			"writable)", path, strerror(e));
		return -e;
	}
	setvbuf(n->trace, NULL, _IOFBF, 1 << 20);
	fprintf(n->trace, "# hk fault trace 1 node=%d nodes=%d\n", n->self, n->count);
	return 0;
}

/* At the fault: which guest thread, in which mode, when tracing. */
void hk_trace_fault(struct hk_node *n, struct hk_waiter *w, int vcpu)
{
	if (!n->trace)
		return;
	if (!n->trace_vcpus_said) {
		n->trace_vcpus_said = true;
		fprintf(n->trace, "# vcpus=%u\n", n->cluster.vcpus);
	}
	bool user = false;
	w->guest_thread = vcpu >= 0 && n->cfg.cb.guest_thread
				  ? n->cfg.cb.guest_thread(n->cfg.cb.opaque, vcpu, &user)
				  : (uint64_t)w->tid;
	w->user = user;
	w->vcpu = (int8_t)vcpu;
}

void hk_trace_stall(struct hk_node *n, const struct hk_waiter *w, uint64_t page, uint64_t now)
{
	if (!n->trace)
		return;
	fprintf(n->trace, "%lu %lu %d %lx %c %c %lx %d\n", w->t0, now - w->t0, w->vcpu, page,
		w->write ? 'w' : 'r', w->user ? 'u' : 'k', w->guest_thread, hk_home_of(n, page));
}

void hk_trace_close(struct hk_node *n)
{
	if (n->trace && fclose(n->trace) != 0)
		hk_warn("HK_FAULT_TRACE: the trace of node %d is incomplete: %s", n->self,
			strerror(errno));
	n->trace = NULL;
}
