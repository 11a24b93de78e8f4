/*
 * Software-defined server glue: what the files of hw/i386/hyperkernel/ share.
 *
 * One guest runs across N QEMU processes ("nodes").  Guest RAM is kept
 * coherent page by page by libhyperkernel (userfaultfd); every node has every
 * vCPU object, but each vCPU runs on exactly one node and is parked elsewhere.
 * Node 0 (the io-node) owns the live device models.
 *
 * One file per concept:
 *   object.c      the QOM object, its properties and the machine set-up
 *   cluster.c     glue messages between nodes: configuration agreement, where
 *                 each vCPU runs, shutdown; the receive dispatch
 *   vcpu-state.c  vCPU state: save/load, export/import
 *   interrupts.c  APIC hooks: forwarding, addressing, EOI, inert devices
 *   moves.c       I/O visits to the io-node and back, policy moves
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
#include "qemu/thread.h"
#include "exec/cpu-common.h"
#include "hw/core/cpu.h"

#define TYPE_HYPERKERNEL "hyperkernel"
OBJECT_DECLARE_SIMPLE_TYPE(HyperkernelState, HYPERKERNEL)

#ifndef HK_MAX_VCPUS
#define HK_MAX_VCPUS 64
#endif

/* A guest RAM block registered with the library. */
typedef struct HkRegion {
    RAMBlock *rb;
    uint64_t region_off;        /* offset in the library's region space */
    ram_addr_t ram_addr;
    uint64_t len;
} HkRegion;

struct HyperkernelState {
    Object parent_obj;

    /* properties (object.c) */
    uint32_t node, nodes;
    char *listen, *peers, *secret_id, *vcpus, *policy;
    uint64_t budget;
    int64_t epoch;
    bool has_epoch;

    /* set-up (object.c) */
    struct hk_node *hk;
    char **peer_addr;
    uint64_t local_mask;             /* vCPUs that start here */
    uint8_t hash[32];                /* of the machine definition */
    int thread_ids[HK_MAX_VCPUS];
    HkRegion regions[HK_MAX_REGIONS];
    int nregions;
    Notifier init_done;
    Notifier shutdown;
    bool started;
    bool shutting_down;

    /* where each vCPU runs (cluster.c) */
    QemuMutex lock;
    QemuCond cond;
    int owner[HK_MAX_VCPUS];         /* where each vCPU runs, as we believe */
    int home[HK_MAX_VCPUS];          /* where it returns after an I/O visit */
    uint64_t mig_seq[HK_MAX_VCPUS];  /* moves of each vCPU, newest owner[] wins */
    int configs_seen;
    uint64_t peer_mask[HK_MAX_NODES];
    uint64_t peer_budget[HK_MAX_NODES];
    char config_error[256];
    int stopped_seen;

    /* moves.c */
    int export_to[HK_MAX_VCPUS];     /* move there at the next loop exit, or -1 */
    int64_t io_arrival[HK_MAX_VCPUS];
    int64_t last_move_ns[HK_MAX_VCPUS]; /* policy moves: at most one per 20 ms */

    /* tb.c */
    QemuThread tbinval_thread;
    GAsyncQueue *tbinval_queue;

    /* util.c: work for the main loop, in arrival order (BHs are LIFO) */
    GAsyncQueue *main_queue;
    QEMUBH *main_bh;

    /* counters, reported by query-hyperkernel */
    uint64_t mig_out, mig_in, mig_bytes_last, mig_bytes_total;
    uint64_t mig_lat_last, mig_lat_max, mig_lat_total;
    uint64_t irq_fwd_sent, irq_fwd_recv, eoi_fwd, addr_bcast;
    uint64_t io_moves_pio, io_moves_mmio, io_returns;
    uint64_t tbinval_try_ok, tbinval_deferred;
    uint64_t policy_moves;
};

/* The one hyperkernel object of this process, NULL without one. */
extern HyperkernelState *hks;

/* util.c */
int64_t hk_now(void);
static inline bool hk_is_io_node(void)
{
    return hks->node == 0;
}
void G_NORETURN hk_fatal(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void hk_run_on_cpu(CPUState *cs, run_on_cpu_func func, run_on_cpu_data d);
void hk_run_in_main_loop(void (*fn)(void *opaque), void *opaque);
void hk_util_init(void);

/* object.c */
HkRegion *hk_region_of_offset(uint64_t offset);
bool hk_mr_is_coherent(MemoryRegion *mr);

/* cluster.c */
void hk_cluster_agree(MachineState *ms);
void hk_cluster_send_irq(int node, int cpu, int mode, int vec, int trig);
void hk_cluster_broadcast_apic_addr(int cpu, int id, int log_dest,
                                    int dest_mode, uint64_t apicbase);
void hk_cluster_send_eoi(int vec);
void hk_cluster_broadcast_shutdown(void);
void hk_cluster_stopped_barrier(void);
void hk_cluster_vcpu_left(int cpu, int target);
void hk_cluster_vcpu_stayed(int cpu);
void hk_cluster_vcpu_arrived(int cpu);
void hk_cb_vcpu_receive(void *opaque, int from, uint32_t id,
                        const void *blob, size_t len);

/* vcpu-state.c */
void hk_vcpu_export(CPUState *cs, int target);
void hk_vcpu_export_work(CPUState *cs, run_on_cpu_data d);
void hk_vcpu_import(CPUState *cs, int from, const void *blob, size_t len);

/* interrupts.c */
void hk_irq_init(void);
void hk_irq_receive(int from, int cpu, int mode, int vec, int trig);
void hk_apic_addr_receive(int cpu, int id, int log_dest, int dest_mode,
                          uint64_t apicbase);
void hk_eoi_receive(int vec);

/* moves.c */
void hk_moves_init(void);
void hk_moves_vcpu_arrived(int cpu);
void hk_cb_stall(void *opaque, const struct hk_stall *stall,
                 struct hk_decision *decision);

/* tb.c */
void hk_tb_init(void);
void hk_cb_page_arrived(void *opaque, uint64_t offset);
void hk_cb_page_left(void *opaque, uint64_t offset);

/* peer-loss.c */
void hk_peer_loss_thread_init(void);
void hk_cb_peer_lost(void *opaque, int node, const struct hk_page_range *ranges,
                     size_t nranges, uint64_t lost_pages);

#endif
