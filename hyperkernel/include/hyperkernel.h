/*
 * hyperkernel.h - the public API of the per-node hyperkernel.
 *
 * One hk_node per process.  The embedder (QEMU glue, or the tests) maps guest
 * RAM itself, hands it to hk_region_register(), then hk_node_start() joins the
 * mesh of peers.  From then on any thread that touches a page that is not
 * present (or writes a read-only copy) blocks inside the kernel until the
 * library's event thread has fetched the page from its peers.
 *
 * Threading: the library runs one event thread per node (userfaultfd faults
 * and peer messages in one epoll loop, so a reply is handled without an extra
 * hand-off) plus one sender thread per peer link (only used when a socket is
 * full or the link is shaped).  Every callback below is called from the event
 * thread: it must be quick and must never touch guest RAM (that would fault
 * on the very thread that resolves faults).
 *
 * Errors are negative errno values.  All global symbols carry the hk_ prefix.
 */
#ifndef HYPERKERNEL_H
#define HYPERKERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HK_PROTOCOL_VERSION 7
#define HK_PAGE_SIZE 4096u
#define HK_MAX_NODES 64
#define HK_MAX_REGIONS 8
#define HK_VCPU_BLOB_MAX (128u * 1024u)
#define HK_MAX_VCPUS 64
/* on_page_left: the embedder will call hk_page_left_done() later */
#define HK_DEFER 1

struct hk_node;

enum hk_decision_kind {
	HK_BRING_PAGE = 0, /* fetch the page to this node (policy "page") */
	HK_MOVE_VCPU = 1,  /* send the stalled thread's vCPU to target_node */
};

struct hk_decision {
	enum hk_decision_kind kind;
	int target_node;
	unsigned reason;  /* why (the library's counters name it); set by the policy */
	/* HK_MOVE_VCPU to a node whose CPUs are all taken: a vCPU of that
	 * node's (this one, as far as we know) comes back here in exchange; the
	 * target picks and sends it when the moved vCPU arrives; -1: none */
	int swap_vcpu;
};

/* What the event thread knows about a stall when it asks the policy. */
struct hk_stall {
	pid_t tid;          /* the kernel thread id that faulted */
	int vcpu;           /* from hk_thread_set_vcpu(), or -1 */
	uint64_t offset;    /* byte offset of the page in the region space */
	bool is_write;
	bool migratory;     /* a read asked for writing: the page was read and then
			     * written here in turn (requester.c), so to the
			     * policies it is a write stall */
	int home_node;      /* the node that keeps this page's directory */
	int likely_owner;   /* best local guess of who holds it (home if unknown) */
	uint64_t wake_generation; /* hk_wake_generation() when the policy decided */
	uint64_t id;        /* this stall, for hk_stall_left() */
	uint64_t guest_thread; /* cb.guest_thread(), or the tid without it */
	bool user;          /* and it faulted in guest user code (learned only) */
};

/* A run of lost pages [first, first + count) as byte offsets / page counts. */
struct hk_page_range {
	uint64_t offset;
	uint64_t pages;
};

/* A forwarded interrupt and a vCPU's APIC addressing state, as plain integers
 * (x86 LAPIC: delivery mode 0-7, vector 0-255, trigger mode 0-1). */
struct hk_irq {
	uint32_t vcpu;
	int32_t delivery_mode, vector, trigger_mode;
};

struct hk_apic_addr {
	uint32_t vcpu;
	uint32_t apic_id, log_dest, dest_mode;
	uint64_t apicbase;
};

/* What every node must agree on before the guest starts. */
struct hk_machine {
	uint8_t hash[32];   /* of the machine definition (type, RAM, -smp, kernel, ...) */
	uint32_t vcpus;     /* vCPUs the guest has */
	uint64_t vcpu_mask; /* vCPUs that start on this node */
};

/* Evacuation (evacuate.c): where a node that leaves on purpose stands. */
enum hk_evac_phase {
	HK_EVAC_NONE = 0,
	HK_EVAC_VCPUS,   /* its vCPUs are being moved to the other nodes */
	HK_EVAC_PAGES,   /* every page it holds is pushed (Exclusive) or dropped (Shared) */
	HK_EVAC_FREEZE,  /* the others hold new requests for pages it is home for */
	HK_EVAC_DRAIN,   /* its directory finishes the transactions under way */
	HK_EVAC_DONE,    /* its directory entries moved, it said BYE: the embedder exits */
	HK_EVAC_REFUSED, /* could not start (reason says why); nothing changed */
};

struct hk_evac_status {
	int node;            /* the node leaving (-1: none) */
	enum hk_evac_phase phase;
	char reason[96];     /* what started it (operator, or a health threshold) */
	uint64_t started_ns, finished_ns; /* CLOCK_MONOTONIC */
	uint32_t vcpus_moved;
	uint64_t pages_pushed;  /* pages it pushed to other nodes (page data sent) */
	uint64_t copies_dropped; /* shared copies given up (another node keeps one) */
	uint64_t zero_pages;    /* untouched pages handed back as "never written" */
	uint64_t homes_moved;   /* directory entries sent to their new homes */
	uint64_t bytes;         /* page data sent */
	uint64_t pages_left;    /* pages it still holds (0 when done) */
	uint64_t pages_taken;   /* on the others: pages the leaver pushed here */
	uint64_t phase_ns[HK_EVAC_REFUSED + 1]; /* when each phase began (0: not reached) */
};

/* Health telemetry (health.c): values a node reports about its hardware. */
struct hk_health {
	uint64_t corrected_errors; /* memory errors corrected (EDAC ce_count) */
	int32_t temp_c;            /* hottest sensor, degrees Celsius */
	uint64_t link_errors;      /* interconnect errors */
};

struct hk_callbacks {
	void *opaque;
	/*
	 * Called on every stall before the library acts.  *decision holds the
	 * policy's choice; the embedder may change it.  HK_BRING_PAGE: the
	 * library fetches the page.  HK_MOVE_VCPU: the library does NOT fetch;
	 * the embedder must pull the thread out of the fault (signal it) and
	 * move its vCPU with hk_vcpu_send().  A thread left in the fault is
	 * served as soon as it faults again with a BRING decision.
	 */
	void (*on_stall)(void *opaque, const struct hk_stall *stall,
			 struct hk_decision *decision);
	/* A page became present on this node (TCG: drop old translations). */
	void (*on_page_arrived)(void *opaque, uint64_t offset);
	/*
	 * A page left this node.  Return 0 once the translations made from it
	 * are gone, or HK_DEFER if they will be gone later: the embedder then
	 * calls hk_page_left_done() and the library holds the acknowledgement
	 * (INV_ACK / XFER_DROPPED) until it does.  An acknowledgement means this
	 * node can no longer run code of the old page.
	 */
	int (*on_page_left)(void *opaque, uint64_t offset);
	/*
	 * Threads that waited to write the page are about to resume: it is
	 * writable here now.  Return 0 to let them go, or HK_DEFER to resume
	 * them later with hk_page_wake() (TCG: once the translations made from
	 * the old bytes while they waited are gone; a store that lands first
	 * leaves them stale).  Not asked when a missing page is installed
	 * writable (a zero grant): that wakes its waiters itself, and its old
	 * bytes' translations went before the page left.  Event thread;
	 * optional.
	 */
	int (*on_write_wake)(void *opaque, uint64_t offset);
	/*
	 * A peer died (EOF or heartbeat timeout).  ranges lists the pages this
	 * node knows are gone: pages whose directory lived on the dead node and
	 * pages whose only/exclusive copy was there.  If this returns, the
	 * library marks the node failed and answers every further fault on a
	 * page it cannot serve with a SIGBUS (UFFDIO_POISON), so no thread hangs.
	 * Without a callback the library logs and exits the process (status 3).
	 */
	void (*on_peer_lost)(void *opaque, int node, const struct hk_page_range *ranges,
			     size_t nranges, uint64_t lost_pages);
	/* An opaque vCPU-state blob sent by hk_vcpu_send() arrived. */
	void (*on_vcpu_receive)(void *opaque, int from_node, uint32_t vcpu_id,
				const void *blob, size_t len);
	/* A forwarded interrupt for a vCPU the location directory says runs
	 * here (also called from hk_irq_send's caller when it does).  If the
	 * vCPU has left meanwhile, hk_irq_send() it again: it follows. */
	void (*on_irq)(void *opaque, int from_node, const struct hk_irq *irq);
	void (*on_apic_addr)(void *opaque, int from_node, const struct hk_apic_addr *addr);
	void (*on_eoi)(void *opaque, int from_node, int vector);
	/* A peer's guest powered off: stop this node's too. */
	void (*on_shutdown)(void *opaque, int from_node);
	/* Move vCPU vcpu, which runs here as far as the library knows, to target. */
	void (*on_migrate_request)(void *opaque, int from_node, uint32_t vcpu, int target);
	/* Optional, for policy "learned": which guest thread the stalled vCPU
	 * runs (any stable number, e.g. its page-table root and thread pointer;
	 * 0: unknown), and in *user whether it ran the guest's user code (not
	 * its kernel); under every policy, refetch asks only for *user, and a
	 * fault trace (HK_FAULT_TRACE) records both for every stall.  The
	 * vCPU is blocked in its fault while this is asked. */
	uint64_t (*guest_thread)(void *opaque, int vcpu, bool *user);
	/* This node's evacuation changed phase (event thread).  At
	 * HK_EVAC_DONE this node holds no page, runs no vCPU, is home for
	 * nothing and has said BYE: the embedder should exit (status 0)
	 * without stopping the guest, which runs on in the other nodes. */
	void (*on_evacuation)(void *opaque, const struct hk_evac_status *st);
	/* A node joined the running cluster (event thread): it has the
	 * directory's view; the embedder sends it what the library does not
	 * keep (the APIC addressing of the vCPUs that run here). */
	void (*on_peer_joined)(void *opaque, int node);
};

struct hk_config {
	int node_id;
	int node_count;              /* node slots: every node that may ever be in the cluster */
	/* Nodes 0..initial_nodes-1 start the cluster (0: all node_count); the
	 * slots above are for nodes that join it while the guest runs, each in a
	 * slot above every node there, with join set. */
	int initial_nodes;
	bool join;
	/* node_count addresses "unix:/path" or "tcp:host:port"; index = node id */
	const char *const *peers;
	const char *secret;          /* cluster secret; never sent on the wire */
	uint64_t budget_bytes;       /* 0 = unlimited */
	const char *policy;          /* "page" (default), "vcpu", "cost", "learned" (hk_policy_names) */
	/* Physical CPUs of this node: no policy moves a vCPU to a node whose
	 * vCPUs already fill them.  0: the guest's vCPUs / nodes, rounded up. */
	uint32_t cpu_capacity;
	uint64_t fixed_vcpus;        /* vCPUs that no policy moves or swaps (bit per vCPU) */
	uint32_t home_chunk_pages;   /* home(pfn) = (pfn / chunk) % node_count */
	uint32_t link_latency_us;    /* shaping: added one-way latency per message */
	uint64_t link_bandwidth;     /* shaping: bytes/s per link, 0 = unlimited */
	uint32_t heartbeat_ms;       /* default 200 */
	uint32_t peer_timeout_ms;    /* silence that declares a peer dead, default 3000 */
	uint32_t connect_timeout_ms; /* mesh set-up deadline, default 10000 */
	uint32_t spin_us;            /* event thread busy-polls this long before sleeping */
	/* The event thread asks for SCHED_FIFO (HK_EVENT_SCHED=fifo|normal
	 * overrides): for an embedder whose own threads (vCPUs running guest
	 * code) keep the host's CPUs busy, so that a fault or a message preempts
	 * them instead of waiting for the scheduler's next turn. */
	bool event_realtime;
	int protocol_version;        /* 0 = HK_PROTOCOL_VERSION (tests override it) */
	struct hk_callbacks cb;
};

/* The policies hk_config.policy accepts, comma-separated ("page,vcpu,..."). */
const char *hk_policy_names(void);
bool hk_policy_known(const char *name);

/* Fill *cfg with defaults (everything but node id/count/peers/secret). */
void hk_config_init(struct hk_config *cfg);

int hk_node_new(const struct hk_config *cfg, struct hk_node **out);
/* host: page-aligned, private anonymous mapping, not yet touched.  Returns
 * the byte offset of the region in the node's region space (regions are laid
 * end to end in registration order, so every node must register the same
 * sizes in the same order) or a negative errno.  Before hk_node_start(). */
int64_t hk_region_register(struct hk_node *node, void *host, size_t len);
/* Home the pages [offset, offset + len) of the region space on node `home`
 * (one of the nodes that start the cluster) instead of striping them in
 * chunks across all of those nodes.  For an embedder that tells the guest its
 * topology: RAM the guest takes from NUMA node k is then untouched RAM homed
 * on node k, so a first touch on node k sends no message to another node
 * (with no budget it is even premapped there as a zero page).  Every node must give the same homes (the embedder's
 * machine definition covers them).  Before hk_node_start(); homes go by
 * chunk (hk_config.home_chunk_pages), so a chunk takes the home of its first
 * page.  -EINVAL: not page-aligned, outside the registered regions, or not a
 * starting node; -EBUSY: started; -ENOSPC: too many ranges. */
int hk_region_set_home(struct hk_node *node, int64_t offset, size_t len, int home);
/* Connect to every peer, authenticate, start the library's threads. */
int hk_node_start(struct hk_node *node);
/* Tell peers we leave on purpose, stop threads.  Call after every node is
 * done with the memory (a page held here is gone after this). */
void hk_node_shutdown(struct hk_node *node);
void hk_node_free(struct hk_node *node);

/* Per-thread statistics become per-vCPU once the thread is named. */
int hk_thread_set_vcpu(struct hk_node *node, pid_t tid, int vcpu);

/* Send an opaque vCPU state blob (<= HK_VCPU_BLOB_MAX) to another node. */
int hk_vcpu_send(struct hk_node *node, int target, uint32_t vcpu_id,
		 const void *blob, size_t len);

/*
 * Pulling a stalled thread out of its fault (HK_MOVE_VCPU).  A thread blocked
 * in a userfault leaves it when a signal arrives (the fault is retried after
 * the handler), so an embedder that can unwind the faulting access (TCG can,
 * for an access made by translated code) can move the vCPU instead:
 *  - hk_wake_generation() changes before the library does anything that can
 *    wake a faulting thread.  If it is the same in the signal handler as it
 *    was when hk_thread_in_fault() saw the thread blocked, the thread was
 *    still blocked when the signal came, so the handler interrupted the
 *    faulting access itself.  Async-signal-safe.
 *  - hk_thread_in_fault(): the thread is blocked in a userfault now
 *    (/proc/self/task/TID/wchan).  Any thread.
 *  - hk_stall_left(): the pulled thread left the stall (offset, stall->id)
 *    without the page; the library forgets that stall instead of fetching
 *    the page (unless the thread has faulted on it again meanwhile).  Any
 *    thread but a signal handler.
 * A thread that is not pulled out re-faults and gets its page.
 */
uint64_t hk_wake_generation(struct hk_node *node);
bool hk_thread_in_fault(pid_t tid);
int hk_stall_left(struct hk_node *node, uint64_t offset, uint64_t stall_id);

/* Any thread: the translations of a page whose on_page_left returned
 * HK_DEFER are gone; the held acknowledgement goes out. */
int hk_page_left_done(struct hk_node *node, uint64_t offset);

/* Any thread: resume the threads whose wake on_write_wake deferred. */
int hk_page_wake(struct hk_node *node, uint64_t offset);

/* A vCPU thread of the embedder spins in guest code (a PAUSE loop).  Under
 * HK_EVENT_SCHED=auto the event thread then runs SCHED_FIFO, so that a
 * message preempts the spinner, until 50 ms after the last call; otherwise
 * nothing.  Cheap when nothing changes: a clock read and two atomics. */
void hk_vcpu_spinning(struct hk_node *node);

/* ---- the cluster (cluster.c): agreement, vCPU locations, glue messages ---- */

/* After hk_node_start(): exchange the machine definition with every peer and
 * check it (same hash, RAM and vCPU count; each vCPU on exactly one node;
 * budgets that hold the guest RAM).  Fills the vCPU location directory.  0,
 * or -EINVAL / -ETIMEDOUT with a reason for people in why. */
int hk_cluster_agree(struct hk_node *node, const struct hk_machine *m, char *why, size_t whylen);
/* Where a vCPU runs as this node knows it (-1: unknown).  hk_vcpu_send()
 * moves it with a newer move count; the receiver tells every node, and an
 * older update never overrides a newer one. */
int hk_vcpu_location(struct hk_node *node, int vcpu);
/* Where it returns after an I/O visit (travels with the vCPU). */
int hk_vcpu_home(struct hk_node *node, int vcpu);
void hk_vcpu_set_home(struct hk_node *node, int vcpu, int target);
/* To the node that runs irq->vcpu (on_irq right here if that is us). */
int hk_irq_send(struct hk_node *node, const struct hk_irq *irq);
int hk_apic_addr_broadcast(struct hk_node *node, const struct hk_apic_addr *addr);
int hk_eoi_send(struct hk_node *node, int target, int vector);
/* Tell every peer the guest powers off (once; later calls do nothing). */
int hk_shutdown_broadcast(struct hk_node *node);
bool hk_shutting_down(struct hk_node *node);
/* At exit: tell every peer this node stopped and wait until every live peer
 * has too (or a peer is lost).  0, or -ETIMEDOUT. */
int hk_stopped_barrier(struct hk_node *node, uint32_t timeout_ms);
/* From any node (QMP, say): 1 if the vCPU runs here (the caller moves it);
 * 0 if the request went to the node that runs it (it follows a vCPU that is
 * moving, so it is never lost); -EINVAL for a bad vCPU or node. */
int hk_vcpu_migrate_request(struct hk_node *node, int vcpu, int target);

/* All statistics as a JSON object; the caller frees the string. */
char *hk_stats_json(struct hk_node *node);

/* ---- evacuation and health (evacuate.c, health.c) ---- */

/* Any thread: start moving everything off this node (its vCPUs, then its
 * pages, then its directory), after which it leaves the cluster while the
 * guest runs on.  Refused (-EBUSY, -EINVAL, -ENOSPC) with a reason in why:
 * another evacuation runs, no other node is left to take the vCPUs, a vCPU
 * is fixed here, or the other nodes' budgets cannot hold the guest. */
int hk_evacuate(struct hk_node *node, const char *reason, char *why, size_t whylen);
/* Any thread: the latest evacuation this node knows of (its own or a peer's). */
void hk_evac_status_get(struct hk_node *node, struct hk_evac_status *st);
/* Any thread: add injected values to this node's telemetry (the testbed's
 * hyperkernel-inject-health).  -EINVAL with a reason for a value out of
 * range.  Past a threshold (HK_HEALTH_MAX_*), the node evacuates itself. */
int hk_health_inject(struct hk_node *node, const struct hk_health *h, char *why, size_t whylen);
/* Any thread: turn a knob while the guest runs (the testbed's
 * hyperkernel-set-knob), e.g. to compare two settings within one boot.
 * Only knobs that are safe to change at any moment take it:
 * HK_PAGE_HOLD_US.  -ENOENT for another name, -EINVAL for a value out of
 * the knob's range, each with a reason in why. */
int hk_set_knob(struct hk_node *node, const char *name, uint64_t value, char *why, size_t whylen);
/* This node's telemetry (real sources plus injected) and health score
 * (100: healthy, 0: past a threshold). */
void hk_health_get(struct hk_node *node, struct hk_health *h, uint32_t *score);

int hk_node_id(const struct hk_node *node);
int hk_page_home(const struct hk_node *node, uint64_t offset);
/* True once a peer has been lost; the region must not be trusted. */
bool hk_node_failed(const struct hk_node *node);

#ifdef __cplusplus
}
#endif
#endif
