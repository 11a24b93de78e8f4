/*
 * sim.h - the deterministic simulation's world: N nodes of the real library
 * in one process.  Three files of the library are replaced at link time:
 * memory.c (guest RAM is a buffer with a per-page mapping state),
 * link.c (a link is an in-order queue of encoded frames) and clock.c
 * (virtual time).  Everything else, the protocol included, is the code that
 * runs inside QEMU.  One seed drives every choice, so a seed replays exactly.
 */
#ifndef HK_SIM_H
#define HK_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "hk.h"

#define SIM_MAX_NODES 8
#define SIM_MAX_THREADS 32

/* What an access to a page does on one node, as the MMU would decide. */
enum sim_map {
	SIM_NONE = 0, /* missing: any access faults */
	SIM_RO,       /* present, write-protected: a write faults */
	SIM_RW,       /* present, writable */
	SIM_ZERO,     /* the shared zero page (premapped): a write copies on write */
	SIM_ZERO_WP,  /* the zero page, write-protected */
	SIM_POISON,   /* any access gets SIGBUS */
};

struct sim_frame {
	struct sim_frame *next;
	uint64_t deliver_at; /* virtual ns: links delay, never reorder */
	size_t len;
	uint8_t buf[];
};

struct sim_queue {
	struct sim_frame *head, *tail;
	uint64_t count;
};

struct sim_node {
	struct hk_node *hk;
	int memfd;         /* an eventfd standing in for the userfaultfd */
	uint8_t *ram;
	uint8_t *map;      /* enum sim_map per page */
	bool alive;
	struct sim_queue out[SIM_MAX_NODES];
};

struct sim {
	uint64_t seed, rng;
	uint64_t now_ns;
	int nodes;
	uint64_t pages;
	struct sim_node node[SIM_MAX_NODES];
	uint64_t frames_sent, frames_delivered;
	bool verbose;
};

extern struct sim sim;

uint64_t sim_rand(void);
static inline uint64_t sim_below(uint64_t n)
{
	return n ? sim_rand() % n : 0;
}
struct sim_node *sim_node_of_memory(const struct hk_memory *mem);

/* A recorded fault trace as a workload (sim_trace.c). */
#define SIM_TRACE_MAX_PAGES 65536
struct sim_op {
	uint64_t page;     /* dense */
	/* The access another vCPU made to the page just before, in the trace
	 * (dep_vcpu -1: none); this one waits for it, so that the page passes
	 * between the vCPUs in the recorded order.  Then the vCPU runs
	 * think_ns: from the later of its own last stall's end and that
	 * access's end to this fault, as recorded. */
	int dep_vcpu, dep_op;
	uint64_t think_ns;
	uint64_t guest_thread; /* what the glue's guest_thread said, */
	bool write, user;      /* and whether in user mode */
};
struct sim_trace {
	int nodes, vcpus;
	uint64_t pages, records;
	uint64_t home_first[SIM_MAX_NODES], home_count[SIM_MAX_NODES];
	int start_node[SIM_MAX_THREADS];
	struct sim_op *ops[SIM_MAX_THREADS];
	int nops[SIM_MAX_THREADS];
};
/* Records of vCPUs whose t0 is in [after, before]; -1 with why on bad input. */
int sim_trace_load(struct sim_trace *t, char *const *files, int nfiles, uint64_t after,
		   uint64_t before, char *why, size_t len);
/* Wake the threads of node k blocked on page (they retry their access). */
void sim_wake(int k, uint64_t page);
/* A node's mapping of page may have changed: check it after this step. */
void sim_touch(uint64_t page);
void sim_deliver(int from, int to);
void sim_deliver_burst(int from, int to, int max);

#endif
