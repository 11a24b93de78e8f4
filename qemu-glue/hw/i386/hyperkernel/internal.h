/*
 * Software-defined server glue: what the files of hw/i386/hyperkernel/ share.
 *
 * One guest runs across N QEMU processes ("nodes").  Guest RAM is kept
 * coherent page by page by libhyperkernel (userfaultfd); every node has every
 * vCPU object, but each vCPU runs on exactly one node and is parked elsewhere.
 * Node 0 (the io-node) owns the live device models.  The library also owns
 * the cluster: the configuration agreement, where each vCPU runs (and its
 * home), the messages between nodes and the shutdown barrier.  The glue only
 * translates between it and QEMU's types.
 *
 * One file per concept:
 *   object.c      the QOM object, its properties, the machine set-up and
 *                 shutdown
 *   vcpu-state.c  a vCPU's state: save/load, export/import
 *   moves.c       why a vCPU moves: I/O visits and back, policy, requests
 *   pull.c        pulling a vCPU out of a stall so that it moves instead
 *   pause.c       a vCPU spinning in a PAUSE loop yields its host CPU
 *   interrupts.c  APIC hooks: forwarding, addressing, EOI, inert devices
 *   tb.c          dropping translations of pages that move
 *   qmp.c         query-hyperkernel, hyperkernel-migrate-vcpu
 *   peer-loss.c   a peer died: say so, stop, exit 3
 *   util.c        clocks, fatal errors, work for the main loop or a vCPU
 *
 * Threads: the library's event thread calls our callbacks; they never take
 * the BQL or touch guest RAM.  Work for a vCPU goes through hk_run_on_cpu()
 * (that vCPU's thread, BQL held, FIFO per vCPU); work for the machine goes
 * through hk_run_in_main_loop() (main loop, BQL held, FIFO).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_I386_HYPERKERNEL_INTERNAL_H
#define HW_I386_HYPERKERNEL_INTERNAL_H

#include <hyperkernel.h>
#include "qom/object.h"
#include "qemu/notify.h"
#include "exec/cpu-common.h"
#include "hw/core/cpu.h"
#include "qapi/qapi-types-hyperkernel.h"

#define TYPE_HYPERKERNEL "hyperkernel"
OBJECT_DECLARE_SIMPLE_TYPE(HyperkernelState, HYPERKERNEL)

/* A guest RAM block registered with the library. */
typedef struct HkRegion {
    RAMBlock *rb;
    uint64_t region_off;        /* offset in the library's region space */
    ram_addr_t ram_addr;
    uint64_t len;
} HkRegion;

/* pull.c: one vCPU's pull out of a stall */
typedef struct HkPull {
    int armed;                  /* the signal is on its way */
    int left;                   /* unwound: tell the library at the loop exit */
    uint64_t generation;        /* hk_wake_generation() while it was blocked */
    uint64_t offset;            /* the page it was blocked on */
    uint64_t stall_id;          /* and the library's number for that stall */
} HkPull;

struct HyperkernelState {
    Object parent_obj;

    /* properties (object.c) */
    uint32_t node, nodes;
    uint32_t max_nodes;              /* slots: nodes..max_nodes-1 may join later */
    bool join;                       /* this process joins a running cluster */
    char *listen, *peers, *secret_id, *vcpus, *policy;
    uint64_t budget;
    int64_t epoch;
    bool has_epoch;
    uint32_t max_vcpus;              /* licensed: vCPUs from this index on never run */

    /* set-up (object.c) */
    struct hk_node *hk;
    char **peer_addr;
    uint64_t local_mask;             /* vCPUs that start here */
    int thread_ids[HK_MAX_VCPUS];
    HkRegion regions[HK_MAX_REGIONS];
    int nregions;
    Notifier init_done;
    Notifier shutdown;
    bool started;

    /* evacuation.c */
    bool evacuated;                  /* this node left: exit without stopping the guest */
    struct hk_health injected_health;

    /* moves.c */
    int export_to[HK_MAX_VCPUS];     /* move there at the next loop exit, or -1 */
    int64_t io_arrival[HK_MAX_VCPUS];
    int64_t last_move_ns[HK_MAX_VCPUS]; /* policy moves: at most one per 20 ms */
    HkPull pull[HK_MAX_VCPUS];          /* pull.c */

    /* util.c: work for the main loop, in arrival order (BHs are LIFO) */
    GAsyncQueue *main_queue;
    QEMUBH *main_bh;

    /* counters, reported by query-hyperkernel */
    uint64_t mig_out, mig_in, mig_bytes_last, mig_bytes_total;
    uint64_t mig_lat_last, mig_lat_max, mig_lat_total;
    uint64_t irq_fwd_sent, irq_fwd_recv, eoi_fwd, addr_bcast;
    uint64_t io_moves_pio, io_moves_mmio, io_returns;
    uint64_t tbinval_try_ok, tbinval_deferred, tbinval_arrival_deferred;
    uint64_t tbinval_acks_released;
    uint64_t tbinval_ack_early_stall, tbinval_ack_early_timeout;
    uint64_t tbinval_after_store;
    uint64_t tbinval_wake_deferred, tbinval_wake_slow;
    uint64_t policy_moves, requests_stayed, requests_followed;
    uint64_t pause_spins, pause_yields;     /* pause.c */
    uint64_t pulls, pulls_raced, pulls_outside_tb, pulls_not_in_fault;
    uint64_t irqs_unlicensed;
};

/* The one hyperkernel object of this process, NULL without one. */
extern HyperkernelState *hks;

/* util.c */
int64_t hk_now(void);
static inline bool hk_is_io_node(void)
{
    return hks->node == 0;
}
static inline bool hk_vcpu_licensed(int cpu_index)
{
    return !hks->max_vcpus || cpu_index < (int)hks->max_vcpus;
}
void G_NORETURN hk_fatal(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void hk_run_on_cpu(CPUState *cs, run_on_cpu_func func, run_on_cpu_data d);
void hk_run_in_main_loop(void (*fn)(void *opaque), void *opaque);
void hk_util_init(void);

/* object.c */
HkRegion *hk_region_of_offset(uint64_t offset);
bool hk_mr_is_coherent(MemoryRegion *mr);

/* vcpu-state.c */
void hk_vcpu_export(CPUState *cs, int target, HyperkernelMoveReason why);
void hk_cb_vcpu_receive(void *opaque, int from, uint32_t vcpu,
                        const void *blob, size_t len);

/* moves.c */
void hk_moves_init(void);
void hk_moves_vcpu_arrived(int cpu);
bool hk_move_request(int cpu, int target, Error **errp);
void hk_cb_migrate_request(void *opaque, int from, uint32_t vcpu, int target);
void hk_cb_stall(void *opaque, const struct hk_stall *stall,
                 struct hk_decision *decision);
uint64_t hk_cb_guest_thread(void *opaque, int vcpu, bool *user);

/* pause.c */
bool hk_pause_init(Error **errp);

/* pull.c */
void hk_pull_init(void);
void hk_pull_thread_init(void);
bool hk_pull_start(CPUState *cs, pid_t tid, const struct hk_stall *stall);
void hk_pull_left(CPUState *cs);

/* interrupts.c */
void hk_irq_init(void);
void hk_cb_irq(void *opaque, int from, const struct hk_irq *irq);
void hk_cb_apic_addr(void *opaque, int from, const struct hk_apic_addr *addr);
void hk_cb_eoi(void *opaque, int from, int vector);

/* tb.c */
void hk_tb_init(void);
void hk_tb_page_stalled(uint64_t offset);
void hk_tb_write_stalled(int vcpu, uint64_t offset);
void hk_cb_page_arrived(void *opaque, uint64_t offset);
int hk_cb_page_left(void *opaque, uint64_t offset);
int hk_cb_write_wake(void *opaque, uint64_t offset);

/* evacuation.c */
void hk_evacuation_init(void);

/* membership.c */
void hk_cb_peer_joined(void *opaque, int node);
void hk_cb_evacuation(void *opaque, const struct hk_evac_status *st);

/* peer-loss.c */
void hk_peer_loss_thread_init(void);
void hk_cb_peer_lost(void *opaque, int node, const struct hk_page_range *ranges,
                     size_t nranges, uint64_t lost_pages);

#endif
