/*
 * hk.h - internal declarations shared by the modules of src/.
 * Each section names the file that owns the struct and its functions.
 */
#ifndef HK_INTERNAL_H
#define HK_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "hyperkernel.h"

/* ---------------- log.c, clock.c ---------------- */
void hk_log_set_prefix(const char *prefix);
void hk_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void hk_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void hk_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
uint64_t hk_now_ns(void);

#ifdef HK_DEBUG
#define HK_ASSERT(c)                                                              \
	do {                                                                      \
		if (!(c))                                                         \
			hk_die("invariant failed: %s (%s:%d)", #c, __FILE__, __LINE__); \
	} while (0)
#else
#define HK_ASSERT(c) ((void)0)
#endif

/* ---------------- hmac_sha256.c ---------------- */
#define HK_SHA256_LEN 32
struct hk_sha256 {
	uint32_t h[8];
	uint64_t total;
	uint8_t buf[64];
	size_t used;
};
void hk_sha256_init(struct hk_sha256 *s);
void hk_sha256_update(struct hk_sha256 *s, const void *data, size_t len);
void hk_sha256_final(struct hk_sha256 *s, uint8_t out[HK_SHA256_LEN]);
void hk_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
		    uint8_t out[HK_SHA256_LEN]);
bool hk_ct_equal(const void *a, const void *b, size_t len);

/* ---------------- msg.c ---------------- */
#define HK_HOME_MAP_PER_MSG 32u /* chunk homes per HOME_MAP (in mac) */
#define HK_MSG_MAGIC 0x31504b48u /* "HKP1" little-endian */
#define HK_MSG_HDR_LEN 16u
#define HK_NONCE_LEN 32u
#define HK_MSG_MAX_PAYLOAD (HK_VCPU_BLOB_MAX + 16u)

enum hk_msg_type {
	HK_MSG_HELLO = 1,     /* node, count, nonce */
	HK_MSG_HELLO_ACK,     /* node, nonce, mac */
	HK_MSG_AUTH,          /* mac */
	HK_MSG_AUTH_OK,       /* - */
	HK_MSG_REFUSE,        /* reason, version */
	HK_MSG_REQ,           /* page, node=requester, mode, have_copy */
	HK_MSG_FWD,           /* page, node=requester, mode */
	HK_MSG_DATA,          /* page, node=sender, mode + 4096 bytes */
	HK_MSG_GRANT,         /* page, mode, zero */
	HK_MSG_INV,           /* page */
	HK_MSG_INV_ACK,       /* page */
	HK_MSG_XFER_ACK,      /* page: receiver has installed an exclusive copy */
	HK_MSG_XFER_DROPPED,  /* page: the giver dropped it, receiver may write */
	HK_MSG_DONE,          /* page, node=requester: transaction complete */
	HK_MSG_EVICT,         /* page, node=target: owner asks home to move page */
	HK_MSG_XFER_REFUSED,  /* page: a full receiver refuses a pushed page */
	HK_MSG_DROP_REQ,      /* page: a sharer asks the home to let it drop its copy */
	HK_MSG_DROP_OK,       /* page, aux: 1 drop it now (then DONE), 0 keep it */
	HK_MSG_PEER_LOST,     /* node=dead: a survivor tells the others who died */
	HK_MSG_HEARTBEAT,     /* resident, budget (a, b); load, CPUs, health (arg); busy vCPUs (page) */
	HK_MSG_BYE,           /* - */
	HK_MSG_VCPU,          /* vcpu, seq, home + blob */
	/* cluster.c: between the embedders, ordered with the vCPU blobs */
	HK_MSG_CONFIG,        /* hash (mac), vcpus (count), vcpu mask (a), budget (b), RAM (page) */
	HK_MSG_VCPU_AT,       /* vcpu, node, seq (a): where a vCPU now runs */
	HK_MSG_IRQ,           /* vcpu, arg = delivery mode, vector, trigger mode */
	HK_MSG_APIC_ADDR,     /* vcpu, arg = apic id, logical dest, dest mode; apicbase (a) */
	HK_MSG_EOI,           /* arg[0] = vector */
	HK_MSG_SHUTDOWN,      /* - */
	HK_MSG_STOPPED,       /* - */
	HK_MSG_MIGRATE,       /* vcpu, node = target, count = hops */
	/* evacuation (evacuate.c) */
	HK_MSG_EVAC,          /* node = leaving, mode = step (START, FREEZE, MOVED), a = targets */
	HK_MSG_EVAC_ACK,      /* node = leaving, mode = step: a peer froze its requests */
	HK_MSG_HOME_ENTRY,    /* page, node = owner, a = copyset: a directory entry moves */
	/* a node joins a running cluster (join.c) */
	HK_MSG_MEMBERS,       /* a = present nodes, b = nodes gone, count = initial nodes */
	HK_MSG_HOME_MAP,      /* page = first chunk, count, mac = the chunks' homes */
	HK_MSG_TYPE_COUNT
};

/* Messages of the page protocol proper (they stop after a loss). */
static inline bool hk_msg_is_protocol(unsigned t)
{
	return t >= HK_MSG_REQ && t <= HK_MSG_DROP_OK;
}

enum hk_refuse_reason {
	HK_REFUSE_VERSION = 1,
	HK_REFUSE_SECRET = 2,
	HK_REFUSE_NODE = 3,
	HK_REFUSE_PROTOCOL = 4,
	HK_REFUSE_SLOT = 5, /* a joiner: its slot is taken, or not the next free one */
	HK_REFUSE_BUSY = 6, /* a joiner: an evacuation or another join runs */
};

enum hk_mode { HK_MODE_SHARED = 1, HK_MODE_EXCL = 2 };

/* DATA's aux: what the giver did with its own copy. */
enum hk_data_aux {
	HK_DATA_KEPT = 0,    /* shared, or exclusive and read-only there until XFER_ACK */
	HK_DATA_PUSH = 1,    /* an eviction's push, kept until XFER_ACK (may be refused) */
	HK_DATA_DROPPED = 2, /* exclusive, already dropped there: writable at once */
};

/* a REQ's aux */
enum hk_req_aux {
	HK_REQ_PLAIN = 0,
	HK_REQ_HAVE_COPY = 1, /* an upgrade: the requester holds a copy */
	HK_REQ_MIGRATORY = 2, /* a read that asks to write (requester.c): the home
				 holds it back only as it would a copy (home.c) */
};

struct hk_msg {
	uint8_t type;
	uint8_t flags;
	uint16_t version;
	uint32_t seq;
	uint64_t page;
	uint32_t node;
	uint32_t count;
	uint8_t mode;
	uint8_t aux;          /* REQ: have_copy; GRANT: zero */
	uint16_t reason;
	uint64_t a, b;        /* HEARTBEAT: resident, budget */
	uint32_t vcpu;        /* VCPU and the cluster messages */
	int32_t arg[3];
	uint8_t nonce[HK_NONCE_LEN];
	uint8_t mac[HK_SHA256_LEN];
	const uint8_t *data;  /* DATA: page, VCPU: blob (points into the input) */
	uint32_t data_len;
};

const char *hk_msg_type_name(unsigned type);
/* Encode into buf (>= HK_MSG_HDR_LEN + payload); returns total length. */
size_t hk_msg_encode(const struct hk_msg *m, uint8_t *buf, size_t cap);
/* Decode one frame.  Returns bytes consumed, 0 if more input is needed, or
 * -EBADMSG/-EPROTO/-EMSGSIZE for a malformed frame.  Never reads past len. */
int hk_msg_decode(const uint8_t *buf, size_t len, struct hk_msg *m);
size_t hk_msg_payload_len(const struct hk_msg *m);
/* The length a frame's header claims (magic checked, payload within the
 * maximum), so that a bad frame can be skipped; negative if the stream has
 * no usable boundary. */
long hk_msg_frame_len(const uint8_t *buf, size_t len);

/* ---------------- shaping.c ---------------- */
struct hk_shaper {
	uint32_t latency_us;
	uint64_t bandwidth;   /* bytes/s, 0 = unlimited */
	uint64_t next_free_ns; /* when the simulated wire is idle again */
};
void hk_shaper_init(struct hk_shaper *s, uint32_t latency_us, uint64_t bandwidth);
bool hk_shaper_active(const struct hk_shaper *s);
/* Time at which a message of len bytes queued at now_ns may be delivered. */
uint64_t hk_shaper_release_ns(struct hk_shaper *s, uint64_t now_ns, size_t len);

/* ---------------- stats.c ---------------- */
#define HK_HIST_BUCKETS 40 /* log2 buckets of nanoseconds */
struct hk_hist {
	uint64_t b[HK_HIST_BUCKETS];
	uint64_t count, sum_ns, max_ns;
};
void hk_hist_add(struct hk_hist *h, uint64_t ns);
uint64_t hk_hist_percentile(const struct hk_hist *h, double p);

struct hk_counters {
	uint64_t read_stalls, write_stalls, pages_received, pages_sent;
	uint64_t inval_sent, inval_received, zero_fills, vcpu_blobs_sent,
		vcpu_blobs_received, vcpu_move_decisions, evictions;
	uint64_t irqs_forwarded, irqs_received, migrate_requests_forwarded,
		migrate_requests_lost, location_updates, deferred_acks, pushes_refused,
		shared_drops, readaheads, vcpu_pulls, vcpu_swaps, deferred_wakes;
	uint64_t refetches; /* requester.c: lost copies asked for again, unasked */
	uint64_t capacity_moves, overfull_ticks; /* hk_cluster_capacity_tick */
	uint64_t page_holds; /* home.c: a request waited for the page's hold-down */
	uint64_t read_holds; /* ... of them, requests for a copy (a page written in bursts) */
	uint64_t migratory_holds; /* ... and requests after a migratory read's grant */
	uint64_t install_runs; /* arrivals.c: runs of read copies installed in one UFFDIO_COPY */
	uint64_t event_rt_switches; /* HK_EVENT_SCHED=auto: times the event thread went SCHED_FIFO */
	uint64_t migratory_reads; /* requester.c: read stalls that asked for the page to write */
};

struct hk_thread_stats {
	pid_t tid;
	int vcpu;
	struct hk_counters c;
	struct hk_hist stall;
};

/* Where a stall's time goes, stage by stage; each node records the stages it
 * runs (a requester, a home, a holder), so a cluster's stages are the sum of
 * its nodes' (see hk_stage_name for what each one spans). */
enum hk_stage {
	HK_STAGE_REQUEST_WAIT, /* requester: fault read -> REQ sent */
	HK_STAGE_HOME_QUEUE,   /* home: REQ arrived -> its transaction starts */
	HK_STAGE_INVALIDATE,   /* home: INVs sent -> the last INV_ACK */
	HK_STAGE_GIVE,         /* holder: FWD arrived -> DATA sent */
	HK_STAGE_REMOTE,       /* requester: REQ sent -> DATA or GRANT arrived */
	HK_STAGE_INSTALL,      /* requester: DATA arrived -> installed, thread woken */
	HK_STAGE_HANDOVER,     /* requester: installed -> writable (XFER_ACK, XFER_DROPPED) */
	HK_STAGE_TB_HOLD,      /* holder: page left -> held ack sent (translations gone) */
	HK_STAGE_COUNT
};
const char *hk_stage_name(unsigned s);

/* Why a stall went the way it did; each decision is counted by its reason. */
enum hk_reason {
	HK_WHY_PAGE_ALWAYS = 0, /* "page" brings every page */
	HK_WHY_NOT_A_VCPU,      /* the thread runs no vCPU (device emulation, tests) */
	HK_WHY_OWNER_HERE,      /* no other node to send the vCPU to */
	HK_WHY_TARGET_FULL,     /* every CPU of the owner's node is taken */
	HK_WHY_HOLD_DOWN,       /* the vCPU arrived too recently to move again */
	HK_WHY_PAGE_CHEAPER,    /* "cost": bringing the page costs less */
	HK_WHY_TO_OWNER,        /* "vcpu": the vCPU goes to the owner */
	HK_WHY_VCPU_CHEAPER,    /* "cost": moving the vCPU costs less */
	HK_WHY_EMBEDDER,        /* the embedder turned a move into a fetch */
	HK_WHY_MOVE_TIMEOUT,    /* a move was asked for and did not happen */
	HK_WHY_FIXED_VCPU,      /* the embedder keeps this vCPU where it is */
	HK_WHY_SWAP,            /* to a full node, one of its vCPUs coming back */
	HK_WHY_LEARNED_PAGE,    /* "learned": the thread's history says bring */
	HK_WHY_LEARNED_VCPU,    /* "learned": the thread's data is mostly there */
	HK_WHY_TARGET_BUSY,     /* the owner's host CPUs are busy running its vCPUs */
	HK_WHY_SEQUENTIAL,      /* a read in a sequential run: read-ahead brings it cheaply */
	HK_WHY_TARGET_LEAVING,  /* the page's node is evacuating or left */
	HK_WHY_MANY_WRITERS,    /* several vCPUs here write it and it bounces: a move buys nothing */
	HK_WHY_COUNT
};
const char *hk_reason_name(unsigned r);

#define HK_LINE_SAMPLES 4

struct hk_stats {
	pthread_mutex_t lock; /* per-thread table and histograms */
	struct hk_hist stage[HK_STAGE_COUNT];
	uint64_t decisions[HK_WHY_COUNT]; /* the policy's, by reason */
	pid_t event_tid;      /* for its scheduler statistics */
	struct hk_counters node;
	struct hk_hist read_stall, write_stall;
	struct hk_thread_stats *threads;
	size_t nthreads, cap_threads;
	uint64_t msgs_sent[HK_MSG_TYPE_COUNT], bytes_sent[HK_MSG_TYPE_COUNT];
	uint64_t msgs_recv[HK_MSG_TYPE_COUNT], bytes_recv[HK_MSG_TYPE_COUNT];
	_Atomic uint64_t malformed;
	uint32_t *page_stalls; /* per page, for the hottest pages */
	/* per page, where in it the last few faults were (offset + 1; 0: none),
	 * when the kernel reports exact addresses: which line of a hot page */
	uint16_t (*page_lines)[HK_LINE_SAMPLES];
	uint64_t npages;
};
int hk_stats_init(struct hk_stats *st, uint64_t npages);
/* the event thread, as it reads a fault at offset off of page */
void hk_stats_fault_at(struct hk_stats *st, uint64_t page, uint32_t off);
void hk_stats_destroy(struct hk_stats *st);
struct hk_thread_stats *hk_stats_thread(struct hk_stats *st, pid_t tid); /* lock held */
void hk_stats_set_vcpu(struct hk_stats *st, pid_t tid, int vcpu);
void hk_stats_stall_done(struct hk_stats *st, pid_t tid, uint64_t page, bool write,
			 uint64_t ns);
void hk_stats_msg(struct hk_stats *st, bool sent, unsigned type, size_t bytes);
/* A thread's schedstat: time on a CPU, time waiting for one, timeslices. */
bool hk_schedstat(pid_t tid, uint64_t *run, uint64_t *wait, uint64_t *slices);
/* Adds now - since to the stage's histogram (since 0: not timed, ignored). */
void hk_stats_stage(struct hk_stats *st, enum hk_stage stage, uint64_t since);
char *hk_stats_to_json(struct hk_stats *st, int node_id, uint64_t resident, uint64_t peak,
		       uint64_t budget_pages, const char *policy);

/* ---------------- tuning.c ---------------- */
/* The event thread's scheduling class: normal, SCHED_FIFO, or SCHED_FIFO only
 * while a vCPU of this node spins in guest code (hk_vcpu_spinning). */
enum hk_event_sched { HK_SCHED_NORMAL, HK_SCHED_FIFO, HK_SCHED_AUTO };

struct hk_tuning {
	uint64_t spin_cap_ns, fault_spin_ns, peer_spin_ns; /* the event thread's busy-poll */
	enum hk_event_sched event_sched; /* HK_EVENT_SCHED */
	bool serve_spin_set; /* HK_FAULT_SPIN_US or HK_PEER_SPIN_US given */
	uint32_t readahead;  /* pages asked for ahead of a sequential reader */
	uint32_t readahead_windows; /* of those, chained beyond its last fault (requester.c) */
	uint32_t refetch;    /* lost copies asked for again with one read again */
	bool migratory;      /* a read of a page read-then-written here asks to write */
	bool cork;           /* HK_LINK_CORK: a batch of events sends in one write per link */
	uint64_t hold_down_ns;   /* "cost": a vCPU stays this long after it arrives */
	uint64_t page_hold_ns;   /* a page granted for writing stays this long before it leaves */
	uint64_t read_hold_ns;   /* ... and this long before another node reads it (a copy) */
	uint64_t migratory_hold_ns; /* a page granted to a migratory read, before anyone takes it */
	uint32_t hysteresis_pct; /* "cost": a move must win by this margin */
	uint32_t partner_bounces; /* "learned": bounces in a row that make a partner */
	uint64_t vcpu_prior_ns;  /* "cost": a vCPU move's cost until one is measured */
	uint64_t health_max_ce, health_max_link_errors; /* health.c: evacuate past these */
	int32_t health_max_temp_c;
};
/* From the environment (event_rt: the embedder's default class), each knob checked against its range: -EINVAL (after
 * one line naming the knob and its range) if one is out of it. */
int hk_tuning_load(struct hk_tuning *t, bool event_rt);

/* ---------------- socket.c, link.c ---------------- */
struct hk_outq_item {
	struct hk_outq_item *next;
	uint64_t release_ns;
	size_t len, off;
	uint8_t buf[];
};

struct hk_link {
	int fd;
	int peer;
	bool up;            /* handshake done, not lost */
	bool bye;           /* peer left on purpose */
	pthread_mutex_t lock; /* send side */
	pthread_cond_t cond;
	struct hk_outq_item *head, *tail;
	pthread_t sender;
	bool sender_started, stopping;
	struct hk_shaper shaper;
	uint32_t seq;
	/* hk_link_cork: frames gather here while the event thread works
	 * through one batch of events, and go out in one write after it */
	bool corked;
	pthread_t corker;   /* the event thread: only its frames are held */
	uint8_t *cork;
	size_t cork_len;
	/* receive side: owned by the event thread */
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint64_t last_rx_ns;
	struct hk_stats *stats;
	uint64_t resident, budget; /* peer's last heartbeat */
	uint32_t busy_pct, cpus;   /* and its load (load.c) */
	uint64_t busy_vcpus;       /* and which of its vCPUs keep running (load.c) */
	uint32_t health;           /* and its health score (health.c) */
};

int hk_addr_listen(const char *addr);
int hk_addr_connect(const char *addr, uint32_t timeout_ms);
int hk_accept_link(int listen_fd);
int hk_link_init(struct hk_link *l, int fd, int peer, const struct hk_shaper *shape,
		 struct hk_stats *st);
void hk_link_stop(struct hk_link *l);
/* Encode and send m (thread-safe, never blocks the caller for long). */
int hk_link_send(struct hk_link *l, struct hk_msg *m);
/* Hold the calling thread's frames (copied) until hk_link_uncork, which
 * writes them at once; other threads' frames go out at once, behind them.
 * Only the event thread corks, around one batch of events and never across
 * a wait, so a held frame waits for the rest of that batch at most (and
 * before a callback that may end the process, it uncorks). */
void hk_link_cork(struct hk_link *l);
void hk_link_uncork(struct hk_link *l);
/* Uncork and wait, at most timeout_ms, until what is queued is in the socket. */
void hk_link_push(struct hk_link *l, uint32_t timeout_ms);
/* Blocking helpers for the handshake (before the event thread runs). */
int hk_fd_write_all(int fd, const void *buf, size_t len);
int hk_fd_read_msg(int fd, uint8_t *buf, size_t cap, struct hk_msg *m, uint32_t timeout_ms);
int hk_fd_send_msg(int fd, struct hk_msg *m);

/* ---------------- handshake.c ---------------- */
struct hk_handshake_cfg {
	int self, count, version;
	const char *secret;
	uint32_t timeout_ms;
};
/* This node's side of every handshake. */
struct hk_handshake_cfg hk_handshake_cfg_of(const struct hk_node *n);
/* Returns the authenticated peer's node id or a negative errno; *why gets a
 * human-readable refusal reason on failure. */
int hk_handshake_connect(int fd, const struct hk_handshake_cfg *hc, int expect_peer,
			 char *why, size_t whylen);
int hk_handshake_accept(int fd, const struct hk_handshake_cfg *hc, char *why,
			size_t whylen);
void hk_handshake_refuse(int fd, const struct hk_handshake_cfg *hc, uint16_t reason);
const char *hk_refuse_text(unsigned reason);

/* ---------------- join.c ---------------- */
struct hk_join_pending {
	int fd, peer;
};
bool hk_node_present(struct hk_node *n, int node);
bool hk_node_member(struct hk_node *n, int node);
int hk_join_connect(struct hk_node *n, const struct hk_handshake_cfg *hc,
		    const struct hk_shaper *shape);
int hk_join_acceptor_start(struct hk_node *n);
void hk_join_acceptor_stop(struct hk_node *n);
void hk_join_adopt(struct hk_node *n);              /* event thread: links accepted */
bool hk_join_on_config(struct hk_node *n, int from, const struct hk_msg *m);
void hk_join_on_home_map(struct hk_node *n, int from, const struct hk_msg *m);
bool hk_join_abandoned(struct hk_node *n, int peer); /* a joiner died before it joined */
/* A rehome from giver to the node that joined finished: the next node gives. */
void hk_join_rehomed(struct hk_node *n, int giver, int to);

/* ---------------- memory.c ---------------- */
struct hk_memory {
	int uffd;
	uint64_t features;
	struct {
		uint8_t *host;
		size_t len;
		uint64_t first_page;
	} regions[HK_MAX_REGIONS];
	int nregions;
	uint64_t npages;
	int pagemap_fd;    /* /proc/self/pagemap, opened on first use (-1: not yet) */
	uint64_t zero_pfn; /* PFN of the shared zero page, 0 if not visible */
	/* Bumped before every operation that can wake a thread blocked in a
	 * fault (hk_wake_generation: the embedder's proof that a thread it
	 * signals is still in its fault). */
	_Atomic uint64_t wake_gen;
};
/* Both implementations (memory.c, the simulation's) call this first in
 * every operation that wakes faulting threads. */
static inline void hk_memory_waking(struct hk_memory *mem)
{
	atomic_fetch_add_explicit(&mem->wake_gen, 1, memory_order_seq_cst);
}
int hk_memory_open(struct hk_memory *mem);
void hk_memory_close(struct hk_memory *mem);
int hk_memory_add_region(struct hk_memory *mem, void *host, size_t len);
uint8_t *hk_memory_page_addr(const struct hk_memory *mem, uint64_t page);
int64_t hk_memory_addr_page(const struct hk_memory *mem, uint64_t addr);
int hk_memory_install(struct hk_memory *mem, uint64_t page, const void *src, bool wp);
int hk_memory_install_zero(struct hk_memory *mem, uint64_t page, bool wp);
int hk_memory_install_run(struct hk_memory *mem, uint64_t first, uint32_t npages,
			  const void *src);
/* Where pages first .. first + npages - 1 start, if they lie in one range of
 * host memory (one region), else NULL: what an install of a run needs. */
static inline uint8_t *hk_memory_run_addr(const struct hk_memory *mem, uint64_t first,
					  uint32_t npages)
{
	uint8_t *dst = hk_memory_page_addr(mem, first);
	if (!dst || !npages || hk_memory_page_addr(mem, first + npages - 1) !=
				       dst + (uint64_t)(npages - 1) * HK_PAGE_SIZE)
		return NULL;
	return dst;
}
int hk_memory_install_quiet(struct hk_memory *mem, uint64_t page, const void *src);
int hk_memory_protect(struct hk_memory *mem, uint64_t page, bool wp);
int hk_memory_drop(struct hk_memory *mem, uint64_t page);
int hk_memory_wake(struct hk_memory *mem, uint64_t page);
int hk_memory_poison(struct hk_memory *mem, uint64_t page);
/* Map the shared zero page over [page, page + count) (one region) without
 * waking anyone; returns pages mapped from the start of the run or -errno. */
int64_t hk_memory_premap_zero(struct hk_memory *mem, uint64_t page, uint64_t count);
/* real[i] = 1 if page + i maps a page of its own (written since the zero
 * premap), 0 if it still maps the shared zero page.  count <= 512. */
int hk_memory_scan_real(struct hk_memory *mem, uint64_t page, uint64_t count, uint8_t *real);

/* ---------------- directory.c ---------------- */
struct hk_dir_req {
	struct hk_dir_req *next;
	int node;
	uint8_t mode;
	bool have_copy;
	bool migratory;   /* a read asking to write: held back as a copy would be */
	int evict_target; /* >= 0: an eviction request from the owner */
	bool drop;        /* a sharer asks to drop its copy */
	uint64_t t_arrived;
};

/* HELD: no transaction under way, but the next one waits for the page's
 * hold-down (home.c); no other starts meanwhile. */
enum hk_dir_phase { HK_DIR_IDLE = 0, HK_DIR_INVALIDATING, HK_DIR_WAIT_DONE, HK_DIR_HELD };

struct hk_dir_entry {
	uint64_t copyset;
	int8_t owner;     /* -1: never touched (implicitly the home's zero page) */
	uint8_t phase;
	uint8_t acks_left;
	uint8_t cur_mode;
	int8_t cur_node;
	bool cur_have_copy;
	bool cur_push;    /* the transaction is an eviction pushing the page to cur_node */
	bool cur_migratory; /* ... a read that asks to write (REQ aux 2) */
	bool granted_migratory; /* the last exclusive grant went to such a read */
	int8_t prev_owner; /* a push: the giver, owner again if the receiver refuses */
	uint64_t t_inv;    /* INVs sent */
	uint64_t t_granted; /* the owner's exclusive grant completed (its DONE); 0: none since */
	uint64_t t_copied;  /* a copy went to a reader (its DONE) */
	uint64_t t_burst;   /* the owner last wrote again right after a reader took a copy */
	struct hk_dir_req *qhead, *qtail;
};

struct hk_directory {
	struct hk_dir_entry *e;
	uint64_t npages;
};
int hk_directory_init(struct hk_directory *d, uint64_t npages);
void hk_directory_destroy(struct hk_directory *d);
void hk_directory_enqueue(struct hk_dir_entry *e, struct hk_dir_req *r);
struct hk_dir_req *hk_directory_dequeue(struct hk_dir_entry *e);
int hk_directory_home(uint64_t page, uint32_t chunk, int count);

/* ---------------- policy.c, policy_cost.c ---------------- */
enum hk_policy_kind { HK_POLICY_PAGE = 0, HK_POLICY_VCPU, HK_POLICY_COST, HK_POLICY_LEARNED,
		       HK_POLICY_COUNT };


/* What every policy sees: the stall, the directory's view of the page,
 * measured costs, and recent history.  Built by hk_policy_view(); the
 * policies themselves are pure functions of it, so they are unit-tested
 * without a cluster. */
/* Stalls counted in 10 ms windows: a thread's (learned.c), a vCPU's
 * (policy.c).  hk_stall_window_count() says how many came in the current
 * window or the one before, whichever had more, then counts one more. */
struct hk_stall_window {
	uint64_t start;
	uint32_t count, prev;
};
uint32_t hk_stall_window_count(struct hk_stall_window *w, uint64_t now);

struct hk_vcpu_history { /* a vCPU's stalls here (policy.c) */
	struct hk_stall_window recent;
	uint32_t ws;          /* pages it took for writing here that do not bounce, decayed */
	uint64_t ws_ns;       /* when ws was last halved */
};

struct hk_policy_view {
	const struct hk_stall *stall;
	int self;
	int owner;              /* where the page is: the directory's owner when this
				   node is its home, else who last sent it; -1 unknown */
	bool owner_exact;       /* owner comes from the directory */
	uint64_t copyset;       /* the directory's sharers (0 away from the home) */
	uint64_t page_ns;       /* measured: a page from owner, request to data (0: none yet) */
	uint64_t vcpu_ns;       /* measured: a vCPU to owner, sent to running there (0: none) */
	uint32_t target_vcpus;  /* vCPUs whose home is the owner's node */
	uint32_t target_capacity; /* and its CPUs */
	int swap_vcpu;          /* a vCPU homed there that it could send back here (-1) */
	uint32_t target_busy_pct, target_cpus; /* the owner's load and host CPUs (0: unknown) */
	bool sequential;        /* a read next to the last read fault here (read-ahead's run) */
	bool vcpu_fixed;        /* the stalled vCPU may not move */
	bool target_leaving;    /* the owner's node is evacuating (no vCPU goes there) */
	uint64_t since_moved_ns; /* since this vCPU arrived here (UINT64_MAX: never moved) */
	uint32_t page_bounces;  /* how often the page recently left and came back */
	bool many_writers;      /* it bounces, and two or more vCPUs here write it */
	uint32_t vcpu_stalls;   /* the stalled vCPU's stalls here in the last 10 ms */
	uint32_t vcpu_ws;       /* and the pages it brought here lately: its working set */
	/* learned (learned.c): the stalled guest thread's recent history here */
	uint32_t thread_stalls;    /* its stalls in the last 10 ms */
	uint32_t thread_share_pct; /* of its recent stalls, the share for data at owner */
	uint32_t weight_pct;       /* how far this node trusts that history (outcomes) */
	/* tuning */
	uint64_t hold_down_ns, vcpu_prior_ns;
	uint32_t hysteresis_pct, partner_bounces;
};

struct hk_policy {
	const char *name;
	void (*decide)(const struct hk_policy_view *v, struct hk_decision *d);
};
extern const struct hk_policy hk_policy_page, hk_policy_vcpu, hk_policy_cost,
	hk_policy_learned;
/* partner_there: the page's other writer runs at the target (learned.c):
 * its busy CPU is that partner's, and the vCPU's working set here does not
 * weigh against joining it */
void hk_policy_compare(const struct hk_policy_view *v, struct hk_decision *d,
		       uint64_t repeats_x16, unsigned move_why, unsigned page_why,
		       bool partner_there);

/* ---------------- load.c ---------------- */
void hk_load_sample(struct hk_node *n);

/* ---------------- learned.c ---------------- */
struct hk_learned;
struct hk_learned *hk_learned_new(void);
void hk_learned_free(struct hk_learned *l);
/* A stall of guest thread id (vCPU vcpu) on a page held at owner: fills the
 * view's learned features, then records the stall. */
void hk_learned_observe(struct hk_node *n, uint64_t id, int vcpu, int owner,
			struct hk_policy_view *v);
/* The embedder accepted a move of vcpu away from here to target: judged
 * later, bad if it moves on within the judging window, good if not. */
void hk_learned_moved(struct hk_node *n, int vcpu, int target);
/* Anyone's news of where a vCPU now runs (its VCPU_AT, or its arrival here). */
void hk_learned_relocated(struct hk_node *n, int vcpu, int node);
void hk_learned_tick(struct hk_node *n);
char *hk_learned_json(struct hk_node *n);
/* The checks every moving policy makes first (a vCPU, another node, room
 * there); false with *d set to bring the page and why. */
bool hk_policy_may_move(const struct hk_policy_view *v, struct hk_decision *d);

int hk_policy_parse(const char *name, enum hk_policy_kind *out);
const char *hk_policy_name(enum hk_policy_kind p);
const struct hk_policy *hk_policy_of(enum hk_policy_kind p);
/* Event thread: build the view of a stall, ask the node's policy, count. */
void hk_policy_decide(struct hk_node *n, const struct hk_stall *s, struct hk_decision *d);
void hk_policy_count(struct hk_node *n, unsigned reason);
/* Measured costs, per link (EWMA, one eighth per sample). */
void hk_policy_page_cost(struct hk_node *n, int from, uint64_t ns);
void hk_policy_vcpu_cost(struct hk_node *n, int to, uint64_t ns);

/* ---------------- cluster.c ---------------- */
struct hk_peer_config {
	uint8_t hash[HK_SHA256_LEN];
	uint32_t vcpus;
	uint64_t vcpu_mask, budget, ram;
};
/* The CPUs of a node (0 if its CONFIG has not come) and the vCPUs whose
 * home it is (they run there but for I/O visits). */
uint32_t hk_cluster_capacity(struct hk_node *n, int node);
uint32_t hk_cluster_vcpus_homed(struct hk_node *n, int node);
/* A vCPU homed at node that may be swapped out of it (not in the mask
 * avoid: fixed, or busy there; not except, not moved within settled_ns), the
 * one with the fewest moves; -1. */
int hk_cluster_swap_candidate(struct hk_node *n, int node, int except, uint64_t avoid,
			      uint64_t settled_ns);

struct hk_cluster {
	pthread_mutex_t lock; /* everything below: vCPU threads, QMP and the event thread */
	pthread_cond_t cond;
	bool config_seen[HK_MAX_NODES];
	struct hk_peer_config peer[HK_MAX_NODES];
	bool stopped_seen[HK_MAX_NODES];
	bool shutdown_sent, shutdown_seen;
	uint32_t vcpus;                 /* 0 until hk_cluster_agree */
	int8_t location[HK_MAX_VCPUS];  /* -1: unknown */
	int8_t home[HK_MAX_VCPUS];
	uint64_t seq[HK_MAX_VCPUS];     /* moves of each vCPU: the newest location wins */
	uint32_t capacity[HK_MAX_NODES]; /* each node's CPUs (its CONFIG) */
	/* the policies' measured vCPU cost: a send, until its VCPU_AT comes back */
	uint64_t sent_ns[HK_MAX_VCPUS], sent_seq[HK_MAX_VCPUS];
	int8_t sent_to[HK_MAX_VCPUS];
	uint64_t arrived_ns[HK_MAX_VCPUS]; /* when it last arrived here (hold-down) */
	uint64_t vcpu_cost_ns[HK_MAX_NODES]; /* hk_policy_vcpu_cost */
	uint64_t moved_ns[HK_MAX_VCPUS]; /* when we last heard it moved (swap choice) */
};
/* ---------------- evacuate.c, health.c ---------------- */
/* REHOME starts a handover of a share of one node's homes to another, which
 * then goes as an evacuation's directory does (FREEZE, MOVED); the node stays */
enum hk_evac_step {
	HK_EVAC_STEP_START = 1,
	HK_EVAC_STEP_FREEZE,
	HK_EVAC_STEP_MOVED,
	HK_EVAC_STEP_REHOME,
	HK_EVAC_STEP_ABORT, /* a rehome that met a stronger one gives way (retried after) */
};

struct hk_held_msg {
	struct hk_held_msg *next;
	int from;              /* -1: ours, to send to the page's new home */
	struct hk_msg m;
};

#define HK_EVAC_WINDOW 256

struct hk_evac {
	pthread_mutex_t lock;  /* status and request: QMP threads read them */
	struct hk_evac_status st;
	bool requested;        /* hk_evacuate: the event thread starts it */
	int node;              /* the node leaving, or handing homes over (-1: none) */
	bool rehome;           /* node hands a share of its homes over and stays (atomic) */
	uint32_t share;        /* rehome: every share-th of its chunks moves */
	uint32_t round;        /* which attempt of node's: acknowledgements name it */
	uint32_t own_round;    /* our attempts so far */
	int rehome_to;         /* hk_rehome: the node to hand a share to */
	uint32_t rehome_share;
	uint8_t *moving;       /* per chunk: its entries move in this evacuation or rehome */
	uint64_t homes_given;  /* a joiner: the nodes that handed it their share */
	uint64_t targets;      /* the nodes that take its homes and vCPUs */
	bool frozen;           /* its home pages: requests held (not at the leaver) */
	uint64_t acks;         /* the leaver: peers that froze */
	uint64_t gone;         /* nodes that left on purpose */
	uint64_t asked_ns[HK_MAX_VCPUS]; /* the leaver: when each vCPU was asked to go */
	uint64_t window[HK_EVAC_WINDOW]; /* the leaver: pages asked to leave, still here */
	uint64_t window_ns[HK_EVAC_WINDOW]; /* and when they were asked */
	uint8_t window_state[HK_EVAC_WINDOW]; /* and the state they were asked in */
	int nwindow;
	uint64_t cursor;       /* the leaver: where the next scan for pages starts */
	uint64_t clean;        /* the leaver: pages in a row found not held here */
	bool busy;             /* hk_evac_progress is running (it sends to itself) */
	struct hk_held_msg *held, **held_tail;
	/* EVAC messages of a node whose turn comes after the one under way here
	 * (its START overtook the last MOVED, over another link) */
	struct hk_held_msg *later, **later_tail;
};

struct hk_health_state {
	pthread_mutex_t lock;
	struct hk_health injected, real;
	uint32_t score;
	bool tripped;          /* a threshold was passed: the evacuation was asked */
	uint32_t ticks;
};

/* ---------------- node state (node.c, loop.c and the roles) ---------------- */
enum hk_page_state {
	HK_PS_INVALID = 0,
	HK_PS_SHARED,
	HK_PS_EXCL,
	HK_PS_RECV_EXCL, /* installed read-only, waiting for the giver's drop */
	HK_PS_GIVING,    /* write-protected, sent, waiting for the receiver's ack */
};

struct hk_waiter {
	struct hk_waiter *next;
	pid_t tid;
	bool write;
	bool pulling;  /* asked to move: hk_stall_left may forget it (a re-fault clears it) */
	uint64_t id;   /* hk_stall.id */
	uint64_t t0;
	/* the fault trace's (trace.c), filled only while tracing */
	uint64_t guest_thread;
	bool user;
	int8_t vcpu;
};

#define HK_LOST_RING 8192 /* a power of 2 */

struct hk_page {
	uint8_t state;
	bool req_pending;  /* a REQ of ours is at the home */
	uint8_t req_mode;
	int8_t hint;       /* who last sent us this page */
	int8_t txn_home;   /* the home that runs our transaction on it: DONE goes there */
	int8_t give_to;    /* GIVING: receiver */
	bool pushed;       /* RECV_EXCL: an eviction pushed it, not our request */
	bool move_asked;   /* the policy asked for the waiter's vCPU to move */
	bool reserved;     /* a slot of the budget is held for this page's arrival */
	bool await_room;   /* a request waits for a free slot of the budget */
	bool dropping;     /* a DROP_REQ of ours is at the home */
	uint64_t move_ns;
	uint8_t ack_type;  /* a message held until translations are gone (INV_ACK, */
	int8_t ack_to;     /* XFER_DROPPED, the home's zero GRANT, or a dropped page's
			      DATA, whose bytes wait in held_data) */
	uint8_t ack_mode, ack_aux;
	uint32_t last_use; /* budget clock */
	uint32_t evicting; /* tick of the last eviction request */
	uint64_t t_req, t_data, t_left; /* stage clocks: REQ sent, data arrived, ack held */
	bool ahead;        /* req_pending is a read-ahead nobody waits for yet */
	uint8_t bounces;   /* policy history: left and came back soon after, decayed */
	uint64_t writers;  /* and the local vCPUs that stalled writing it over its last
			      arrivals (bit per vCPU): this window's and the last */
	uint64_t writers_before;
	uint8_t arrivals;  /* counts arrivals to a window of WRITER_WINDOW (page.c) */
	uint32_t left_ms;  /* when it last left (ms, 0: never) */
	uint32_t lost_seq; /* its invalidation's place in the node's lost ring, + 1 */
	uint32_t lost_ms;  /* and when (ms, odd; 0: never) */
	uint8_t migratory; /* read-then-write evidence here, 0..MIGRATORY_MAX (requester.c) */
	bool read_asked_excl; /* the last read stall's request asked to write */
	bool mig_check;    /* it came so: mig_hash is its content then */
	uint64_t mig_hash;
	uint64_t read_ns;  /* that read stall ended, with no write stall since (0: none) */
	struct hk_waiter *waiters;
	bool evac_asked;   /* in the leaver's window (evacuate.c) */
	bool refused;      /* its last push was refused (the leaver asks again) */
	bool zmap;         /* home page premapped as the zero page, not counted
			      in resident (the home may have written it since) */
};

/* ---------------- trace.c ---------------- */
int hk_trace_open(struct hk_node *n);
void hk_trace_fault(struct hk_node *n, struct hk_waiter *w, int vcpu);
void hk_trace_stall(struct hk_node *n, const struct hk_waiter *w, uint64_t page, uint64_t now);
void hk_trace_close(struct hk_node *n);

struct hk_local_msg {
	struct hk_local_msg *next;
	struct hk_msg m;
	uint8_t data[HK_PAGE_SIZE];
};

/* arrivals.c: plain read copies from one link's batch, staged to be installed
 * as one run of consecutive pages */
#define HK_ARRIVALS_RUN 32
struct hk_arrival {
	struct hk_msg m; /* its data points into the staging buffer */
	uint64_t arrived;
	int from;
};
struct hk_arrivals {
	bool batching;  /* loop.c: inside one link's batch of frames */
	uint64_t first; /* the run's lowest page */
	uint32_t lo, len; /* its slots: lo .. lo + len - 1 of 2 * HK_ARRIVALS_RUN */
	uint8_t *buf;   /* 2 * HK_ARRIVALS_RUN pages, a slot each */
	struct hk_arrival slot[2 * HK_ARRIVALS_RUN];
};

struct hk_node {
	struct hk_config cfg;
	FILE *trace;       /* HK_FAULT_TRACE (trace.c), or NULL */
	bool trace_vcpus_said;
	char *secret;
	const char **peers;
	enum hk_policy_kind policy;
	int self, count;
	struct hk_memory mem;
	struct hk_directory dir;
	struct hk_page *pages;
	struct hk_stats stats;
	struct hk_link links[HK_MAX_NODES];
	int listen_fd;
	/* membership (join.c): nodes 0..initial-1 start the cluster; slots up to
	 * count-1 are for nodes that join while it runs */
	int initial;
	uint64_t present;  /* nodes in the cluster now, self included (atomic) */
	uint64_t joining;  /* linked, machine definition not yet compared (atomic) */
	int homes_chain;   /* the node that joined, until every node gave it homes (-1) */
	int chain_to;      /* event thread: the node rehomes went to lately, */
	uint64_t chain_given; /* and the nodes that gave it a share */
	pthread_t acceptor;
	bool acceptor_started;
	pthread_mutex_t join_lock;
	struct hk_join_pending join_pending[HK_MAX_NODES];
	int njoin_pending;
	int epfd, evfd, timerfd;
	pthread_t thread;
	bool started;
	_Atomic bool stop;
	_Atomic bool failed;
	int dead_node;
	struct hk_local_msg *lq_head, *lq_tail; /* messages to ourselves */
	struct hk_local_msg *held_data; /* DATA held until translations are gone */
	uint8_t *zero;      /* one zero page */
	uint8_t *scratch;   /* page copy buffer for outgoing data */
	struct hk_arrivals arrivals; /* read copies staged to install as one run */
	uint64_t resident, budget_pages, clock, clock_ticks;
	uint64_t evict_hand;        /* budget: where the next scan starts */
	uint64_t premap_hand;       /* budget: next slice of the premapped-page count */
	uint64_t reserved;          /* budget: slots held for pages on their way here */
	uint64_t peak_resident;
	uint64_t refused_until[HK_MAX_NODES]; /* budget: a full peer refused a push */
	uint64_t evict_rr;          /* budget: round robin over full peers */
	bool room_freed;            /* budget: retry the requests waiting for room */
	uint64_t *room_wait;        /* budget: pages whose request waits for a slot */
	size_t nroom_wait, cap_room_wait;
	uint64_t evict_last_ns;     /* budget: last eviction pass from the fault path */
	/* adaptive busy-poll of the event thread (coherence.c) */
	uint32_t outstanding;     /* requests of ours not yet finished */
	uint64_t req_sent_ns, ewma_reply_ns, last_serve_ns;
	uint64_t ra_last; /* read-ahead: the last page a read faulted on */
	/* refetch (requester.c): the copies writers took lately, in order */
	struct hk_lost { uint64_t page, ns; bool hot; } lost[HK_LOST_RING];
	uint32_t lost_next;
	uint64_t ahead_outstanding; /* read-aheads in flight that no thread waits for */
	int8_t ra_dir;    /* and the direction it goes in, 0: none */
	/* read-ahead's chain (requester.c): the farthest page asked for, the
	 * page whose arrival asks for the next window, and whether the chain
	 * waits for the reader's next fault */
	uint64_t ra_end, ra_mark;
	bool ra_held;
	struct hk_tuning tuning;
	_Atomic bool event_rt;  /* the event thread runs SCHED_FIFO */
	_Atomic bool rt_auto;   /* HK_EVENT_SCHED=auto: hk_vcpu_spinning may switch it */
	_Atomic bool rt_switching; /* one switch of class at a time */
	_Atomic uint64_t rt_until_ns; /* auto: back to the normal class after this */
	uint64_t spin_cap_ns, fault_spin_ns; /* 0: off (HK_ADAPTIVE_SPIN=0) */
	uint64_t last_peer_ns, peer_spin_ns;  /* after serving a peer's request */
	bool skip_invalidate; /* HK_DEBUG_SKIP_INVALIDATE: broken on purpose */
	bool evac_skip_freeze; /* HK_DEBUG_EVAC_SKIP_FREEZE: broken on purpose */
	bool rehome_skip_freeze; /* HK_DEBUG_REHOME_SKIP_FREEZE: broken on purpose */
	bool skip_capacity_tick; /* HK_DEBUG_SKIP_CAPACITY_TICK: broken on purpose */
	uint64_t skipped_invalidations;
	pthread_mutex_t vcpu_lock;
	pid_t vcpu_tid[HK_MAX_VCPUS]; /* hk_thread_set_vcpu: the thread of each vCPU */
	/* pages whose waiters' vCPUs were asked to move (requester.c, hk_tick) */
#define HK_MOVING_MAX 256
	uint64_t moving[HK_MOVING_MAX];
	int nmoving;
	/* event thread: when an overfull node's vCPUs will have settled
	 * (hk_cluster_capacity_recheck; 0: nothing to check) */
	uint64_t capacity_recheck_ns;
	/* pages in HK_DIR_HELD (home.c), and when each may go */
	struct hk_page_hold { uint64_t page, until; } *holds;
	uint32_t nholds, holds_cap;
	int holdfd; /* a timerfd armed at the earliest hold's end (loop.c) */
	uint64_t hold_armed_ns; /* what it is armed at (0: disarmed) */
	/* threads pulled out of their faults (hk_stall_left, any thread) */
	struct { uint64_t page, id; } left[HK_MOVING_MAX];
	int nleft;
	uint64_t stall_ids; /* the last hk_waiter.id given */
	struct hk_learned *learned; /* learned.c */
	/* load.c: this node's CPUs, and how busy its vCPU threads keep them */
	uint64_t load_prev_ns, load_prev_run[HK_MAX_VCPUS];
	uint32_t busy_pct, host_cpus;
	uint64_t busy_vcpus; /* vCPUs here whose threads ran half the last sample or more */
	/* the policies' measured page cost per link (hk_policy_page_cost) */
	uint64_t page_cost_ns[HK_MAX_NODES];
	struct hk_vcpu_history vcpu_hist[HK_MAX_VCPUS];
	struct hk_cluster cluster;
	/* which node keeps each chunk's directory entries; changes when a node
	 * leaves (evacuate.c).  Every node applies the same changes. */
	int8_t *home_map;
	uint64_t nchunks;
	/* hk_region_set_home: ranges whose chunks start homed on one node */
	struct {
		uint64_t first_page, npages;
		int home;
	} home_ranges[HK_MAX_REGIONS];
	int nhome_ranges;
	struct hk_evac evac;
	struct hk_health_state health;
	/* pages whose translations are gone (hk_page_left_done, any thread) */
	pthread_mutex_t deferred_lock;
	uint64_t *deferred;
	size_t ndeferred, cap_deferred;
};

static inline uint64_t hk_bit(int node)
{
	return 1ull << node;
}

/* ---------------- loop.c (event thread, dispatch) ---------------- */
int hk_coherence_init(struct hk_node *n);
void hk_coherence_destroy(struct hk_node *n);
void *hk_coherence_thread(void *arg);
/* One message from a peer (or ourselves), then whatever it queued locally. */
void hk_dispatch(struct hk_node *n, int from, const struct hk_msg *m);
void hk_drain_local(struct hk_node *n);
void hk_handle_message(struct hk_node *n, int from, const struct hk_msg *m, size_t len);
void hk_handle_fault(struct hk_node *n, uint64_t page, bool write, pid_t tid);
/* The periodic work of the timer: heartbeats, peer timeouts, the budget. */
void hk_tick(struct hk_node *n);
/* The event thread leaves SCHED_FIFO: its node is leaving (bulk work). */
void hk_event_thread_share_cpu(struct hk_node *n);

/* ---------------- page.c (shared by the roles) ---------------- */
int hk_home_of(struct hk_node *n, uint64_t page);
int hk_node_send(struct hk_node *n, int to, struct hk_msg *m);
void hk_send_page(struct hk_node *n, int to, unsigned type, uint64_t page, int node,
		  uint8_t mode, uint8_t aux, const void *data);
void hk_page_arrived(struct hk_node *n, uint64_t page, int from);
/* true: the embedder deferred (HK_DEFER); the acknowledgement must wait */
bool hk_page_left(struct hk_node *n, uint64_t page);
void hk_page_ack(struct hk_node *n, uint64_t page, bool deferred, int to, unsigned type);
void hk_page_flush_deferred(struct hk_node *n);
void hk_must(int r, const char *what, uint64_t page);
void hk_coherence_check_invariants(struct hk_node *n, uint64_t page);

/* Where our DONE for a page goes: the home that ran the transaction (it may
 * have changed since, while a node left), or the page's home. */
static inline int hk_txn_home(struct hk_node *n, uint64_t page)
{
	int h = n->pages[page].txn_home;
	return h >= 0 ? h : hk_home_of(n, page);
}

/* ---------------- requester.c ---------------- */
void hk_requester_fault(struct hk_node *n, uint64_t page, bool write, pid_t tid);
/* A writer took our copy of page (an invalidation): remembered for refetch. */
void hk_requester_lost(struct hk_node *n, uint64_t page);
/* Our exclusive copy is about to be given (holder.c): a migratory read's
 * copy that leaves unwritten tells that guess was wrong. */
void hk_requester_giving(struct hk_node *n, uint64_t page);
void hk_requester_evaluate(struct hk_node *n, uint64_t page);
/* Bring the pages whose waiters were not moved within the bound. */
void hk_requester_check_moves(struct hk_node *n);
/* A thread asked to move left its fault without the page (hk_stall_left). */
void hk_requester_thread_left(struct hk_node *n, uint64_t page, uint64_t stall_id);
int hk_readahead_dir(const struct hk_node *n, uint64_t page);
void hk_requester_on_data(struct hk_node *n, int from, const struct hk_msg *m);
void hk_requester_installed(struct hk_node *n, int from, const struct hk_msg *m, uint64_t arrived);
int hk_arrivals_init(struct hk_node *n);
void hk_arrivals_destroy(struct hk_node *n);
bool hk_arrivals_take(struct hk_node *n, int from, const struct hk_msg *m, uint64_t arrived);
void hk_arrivals_flush(struct hk_node *n);
static inline bool hk_arrivals_holds(const struct hk_node *n, uint64_t page)
{
	return n->arrivals.len && page >= n->arrivals.first &&
	       page < n->arrivals.first + n->arrivals.len;
}
void hk_requester_on_xfer_dropped(struct hk_node *n, int from, const struct hk_msg *m);
void hk_requester_on_grant(struct hk_node *n, int from, const struct hk_msg *m);
void hk_requester_on_drop_ok(struct hk_node *n, int from, const struct hk_msg *m);

/* ---------------- holder.c ---------------- */
void hk_holder_on_fwd(struct hk_node *n, int from, const struct hk_msg *m);
void hk_holder_on_xfer_ack(struct hk_node *n, int from, const struct hk_msg *m);
void hk_holder_on_inv(struct hk_node *n, int from, const struct hk_msg *m);
void hk_holder_on_xfer_refused(struct hk_node *n, int from, const struct hk_msg *m);

/* ---------------- home.c ---------------- */
void hk_home_on_req(struct hk_node *n, int from, const struct hk_msg *m, int evict_target);
void hk_home_on_inv_ack(struct hk_node *n, int from, const struct hk_msg *m);
void hk_home_on_done(struct hk_node *n, int from, const struct hk_msg *m);
int hk_home_take_back(struct hk_node *n, uint64_t page);
/* The page hold-down: the earliest time a held page's next transaction may
 * start (UINT64_MAX: none held), and starting those whose time has come
 * (all of them if now is UINT64_MAX). */
uint64_t hk_home_hold_deadline(const struct hk_node *n);
void hk_home_release_held(struct hk_node *n, uint64_t now);

/* ---------------- failure.c ---------------- */
void hk_failure_peer_lost(struct hk_node *n, int dead);
/* Another survivor (from) says dead died, also if it left cleanly here. */
void hk_failure_peer_reported(struct hk_node *n, int dead, int from);
void hk_failure_poison(struct hk_node *n, uint64_t page);

/* ---------------- budget.c ---------------- */
/* A free slot for a page that will arrive here (true), or false: room is
 * being made and the caller must wait (hk_budget_room_freed retries). */
bool hk_budget_reserve(struct hk_node *n, uint64_t page);
void hk_budget_release(struct hk_node *n, uint64_t page);
void hk_budget_keep_slot(struct hk_node *n, uint64_t page);
uint64_t hk_budget_drop_shared(struct hk_node *n, uint64_t want);
bool hk_budget_full(const struct hk_node *n);
void hk_budget_make_room(struct hk_node *n);
void hk_budget_retry_waiting(struct hk_node *n);
void hk_budget_tick(struct hk_node *n);
/* From the fault path: evict if over budget, at most every 2 ms. */
void hk_budget_pressure(struct hk_node *n);
int hk_budget_pick_target(struct hk_node *n);
int hk_budget_pick_room_target(struct hk_node *n);

/* ---------------- evacuate.c ---------------- */
void hk_evac_init(struct hk_node *n);
void hk_evac_destroy(struct hk_node *n);
/* The event thread: start a requested evacuation and move it on (the tick,
 * and after every message or fault while one runs). */
void hk_evac_progress(struct hk_node *n);
void hk_evac_deliver(struct hk_node *n, int from, const struct hk_msg *m);
/* A request for a page whose home is leaving and frozen: held until its
 * new home is known (true: held, the caller sends nothing). */
bool hk_evac_hold_outgoing(struct hk_node *n, int to, const struct hk_msg *m);
/* A request for a page we are about to be home for: held until the entry
 * arrives (true: held). */
bool hk_evac_hold_incoming(struct hk_node *n, int from, const struct hk_msg *m);
/* from speaks for the page's directory: its home, or its next home while the
 * old one hands it over. */
bool hk_is_from_home(struct hk_node *n, uint64_t page, int from);
/* Pushes, vCPU moves and policies leave this node alone: it is leaving or left. */
bool hk_node_leaving(struct hk_node *n, int node);
/* Hand every share-th chunk this node is home for to node to (join.c asks
 * it of each node in turn when one joins); the steps are an evacuation's
 * FREEZE and MOVED.  0, or -EBUSY / -EINVAL. */
int hk_rehome(struct hk_node *n, int to, uint32_t share);
/* A rehome is under way here (as giver, taker or one that froze for it). */
bool hk_evac_rehoming(struct hk_node *n);
/* The leaver sends a page it pushes (counted: what it moved). */
void hk_evac_page_pushed(struct hk_node *n);
/* A page the leaver pushed arrived here (counted: where its pages went). */
void hk_evac_page_taken(struct hk_node *n, int from);
/* A page left this node (the leaver counts what it moved). */
void hk_evac_page_left(struct hk_node *n, uint64_t page);

/* ---------------- health.c ---------------- */
int hk_health_init(struct hk_node *n);
void hk_health_destroy(struct hk_node *n);
/* The tick: read the real sources now and then, compute the score, and ask
 * for an evacuation once a threshold is passed. */
void hk_health_tick(struct hk_node *n);
uint32_t hk_health_score(struct hk_node *n);

/* ---------------- vcpu.c ---------------- */
void hk_vcpu_deliver(struct hk_node *n, int from, const struct hk_msg *m);

/* ---------------- cluster.c (functions) ---------------- */
void hk_cluster_init(struct hk_cluster *c);
void hk_cluster_destroy(struct hk_cluster *c);
void hk_cluster_deliver(struct hk_node *n, int from, const struct hk_msg *m);
/* hk_vcpu_send/deliver keep the location directory */
uint64_t hk_cluster_vcpu_leaving(struct hk_node *n, uint32_t vcpu, int target, int *home);
void hk_cluster_vcpu_arrived(struct hk_node *n, uint32_t vcpu, uint64_t seq, int home);
void hk_cluster_rebalance(struct hk_node *n, int arrived, int from);
void hk_cluster_capacity_tick(struct hk_node *n);
void hk_cluster_capacity_recheck(struct hk_node *n);
void hk_cluster_vcpu_stayed(struct hk_node *n, uint32_t vcpu, int target);

#endif
