/*
 * Software-defined server glue: why and when a vCPU moves.
 *
 * - I/O visits.  Only the io-node has live device models.  A vCPU elsewhere
 *   that touches MMIO, an I/O port, or a node-local RAM/ROM copy whose live
 *   version is on the io-node (BIOS, option ROMs) unwinds to the start of the
 *   instruction (the hooks' callers do that) and moves to the io-node, where
 *   the instruction runs again against the real devices.  It goes back to its
 *   home node once it has been there 2 ms.
 * - Policy moves.  When the library's policy (vcpu, cost) asks, on a stall,
 *   for the vCPU to move to the node that holds the page, the vCPU's thread
 *   is pulled out of its fault (pull.c) and the vCPU moves without the page;
 *   if it cannot be pulled out, the page is fetched and the vCPU moves at its
 *   next exit from the execution loop anyway.  Its home becomes that node.
 *   vCPU 0 never moves (it alone receives the legacy PIC's interrupts), and
 *   a vCPU moves at most once per 20 ms.
 * - Requests (hyperkernel-migrate-vcpu, sent to any node).  The library sends
 *   a request to the node that runs the vCPU, following it if it is moving;
 *   that node moves it and makes the target its home, so it stays there.  A
 *   vCPU that is already on the target stays and gets it as home.
 *
 * I/O and policy moves set export_to[vCPU] and kick the vCPU; hk_cpu_loop,
 * called by the MTTCG loop between cpu_exec and qemu_wait_io_event, moves it.
 * Requests run as work items in the vCPU's thread.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "qemu/error-report.h"
#include "hw/i386/apic_internal.h"
#include "system/hk-hooks.h"
#include "internal.h"

#define HK_IO_VISIT_NS (2 * 1000 * 1000)
#define HK_POLICY_MOVE_GAP_NS (20 * 1000 * 1000)

/* ------------------------------------------------------------------ */
/* the vCPU loop */

/* export_to[]: -1, or the target node and the reason it moves there */
#define HK_EXPORT(target, why) ((target) | (why) << 8)

/* vCPU thread, BQL held, outside cpu_exec */
static void hk_cpu_loop(CPUState *cs)
{
    int k = cs->cpu_index;
    int exp = qatomic_xchg(&hks->export_to[k], -1);
    int home;

    if (cs->hk_parked) {
        return;
    }
    hk_pull_left(cs);
    if (exp >= 0) {
        hk_vcpu_export(cs, exp & 0xff, exp >> 8);
        return;
    }
    /* a vCPU visiting the io-node for I/O goes home after a while */
    if (hks->io_arrival[k] && hk_now() - hks->io_arrival[k] > HK_IO_VISIT_NS) {
        hks->io_arrival[k] = 0;
        home = hk_vcpu_home(hks->hk, k);
        if (home >= 0 && home != (int)hks->node) {
            qatomic_inc(&hks->io_returns);
            hk_vcpu_export(cs, home, HYPERKERNEL_MOVE_REASON_HOME);
        }
    }
}

/* vCPU thread: its state was just loaded here */
void hk_moves_vcpu_arrived(int cpu)
{
    int64_t now = hk_now();

    hks->last_move_ns[cpu] = now;
    hks->io_arrival[cpu] = hk_vcpu_home(hks->hk, cpu) == (int)hks->node ? 0 : now;
}

/* ------------------------------------------------------------------ */
/* I/O visits */

static void hk_move_to_io_node(CPUState *cpu)
{
    qatomic_set(&hks->export_to[cpu->cpu_index],
                HK_EXPORT(0, HYPERKERNEL_MOVE_REASON_IO));
    cpu_exit(cpu);
}

/* io_prepare: true if this MMIO access must run on the io-node */
static bool hk_io(CPUState *cpu, MemoryRegion *mr)
{
    if (hk_is_io_node()) {
        return false;
    }
    if (mr->owner && object_dynamic_cast(mr->owner, TYPE_APIC_COMMON)) {
        return false;       /* the LAPIC is per vCPU and always local */
    }
    qatomic_inc(&hks->io_moves_mmio);
    hk_move_to_io_node(cpu);
    return true;
}

/* helper_in/out: every port is a device on pc */
static bool hk_pio(CPUState *cpu)
{
    if (hk_is_io_node()) {
        return false;
    }
    qatomic_inc(&hks->io_moves_pio);
    hk_move_to_io_node(cpu);
    return true;
}

/* tlb_set_page_full: node-local RAM/ROM copies take the I/O path off the io-node */
static bool hk_force_io(MemoryRegion *mr)
{
    return !hk_is_io_node() && !hk_mr_is_coherent(mr);
}

/* ------------------------------------------------------------------ */
/* policy moves */

void hk_cb_stall(void *opaque, const struct hk_stall *stall,
                 struct hk_decision *decision)
{
    int k = stall->vcpu;

    /* a thread that waits for a page whose translations are being dropped */
    hk_tb_page_stalled(stall->offset);

    /* the library does not know the vCPU of a thread: map the tid */
    for (int i = 0; k < 0 && i < HK_MAX_VCPUS; i++) {
        if (hks->thread_ids[i] == stall->tid) {
            k = i;
        }
    }
    if (stall->is_write && k >= 0 && k < HK_MAX_VCPUS) {
        hk_tb_write_stalled(k, stall->offset);
    }
    /* vCPU 0 receives the legacy PIC and boots the machine: keep it on node 0 */
    if (decision->kind == HK_MOVE_VCPU && k > 0 && k < HK_MAX_VCPUS &&
        decision->target_node >= 0 &&
        decision->target_node < (int)hks->max_nodes &&
        decision->target_node != (int)hks->node &&
        hk_now() - hks->last_move_ns[k] > HK_POLICY_MOVE_GAP_NS) {
        CPUState *cs = qemu_get_cpu(k);

        if (cs && !qatomic_read(&cs->hk_parked) &&
            qatomic_cmpxchg(&hks->export_to[k], -1,
                            HK_EXPORT(decision->target_node,
                                      HYPERKERNEL_MOVE_REASON_POLICY)) == -1) {
            hk_vcpu_set_home(hks->hk, k, decision->target_node);
            qatomic_inc(&hks->policy_moves);
            cpu_exit(cs);
            /*
             * It moves at its next loop exit either way: the library must
             * know (it asks for the swap a full target needs).  Pulled out,
             * it leaves without the page; if not, it re-faults and the
             * library brings the page first.
             */
            hk_pull_start(cs, stall->tid, stall);
            return;
        }
    }
    decision->kind = HK_BRING_PAGE;
}

/*
 * library callback (event thread), for policy "learned": the guest thread a
 * stalled vCPU runs.  Its page-table root (without the PCID bits) names the
 * process and its FS base the thread (the TLS pointer; the kernel keeps the
 * user's FS while it works for it).  The vCPU is blocked in its fault, so
 * its state does not change under us.  *user: it faulted at CPL 3, in the
 * program rather than in the kernel working for it.
 */
uint64_t hk_cb_guest_thread(void *opaque, int vcpu, bool *user)
{
    CPUState *cs = qemu_get_cpu(vcpu);
    CPUX86State *env;

    if (!cs) {
        return 0;
    }
    env = &X86_CPU(cs)->env;
    *user = (env->hflags & HF_CPL_MASK) == 3;
    return ((env->cr[3] >> 12) * 0x9e3779b97f4a7c15ull) ^ env->segs[R_FS].base ^ 1;
}

/* ------------------------------------------------------------------ */
/* requests */

/* a request's work item: the target node and how often it followed the vCPU */
#define HK_REQUEST(target, hops) ((target) | (hops) << 8)
#define HK_REQUEST_MAX_HOPS 16

/* the vCPU's thread, BQL held, outside cpu_exec */
static void hk_request_work(CPUState *cs, run_on_cpu_data d)
{
    int k = cs->cpu_index;
    int target = d.host_int & 0xff, hops = d.host_int >> 8;

    if (cs->hk_parked) {
        /*
         * It left (an I/O visit, another request) after the request was
         * sent here: follow it, like the library does.
         */
        int r = hops < HK_REQUEST_MAX_HOPS ?
                hk_vcpu_migrate_request(hks->hk, k, target) : -ELOOP;

        qatomic_inc(&hks->requests_followed);
        if (r == 1) {
            /* it is arriving here again: after its import */
            hk_run_on_cpu(cs, hk_request_work,
                          RUN_ON_CPU_HOST_INT(HK_REQUEST(target, hops + 1)));
        } else if (r < 0) {
            error_report("hyperkernel: request to move vCPU %d to node %d dropped: %s",
                         k, target, strerror(-r));
        }
        return;
    }
    hk_vcpu_set_home(hks->hk, k, target);
    if (target == (int)hks->node) {
        hks->io_arrival[k] = 0;             /* this is its home now */
        qatomic_inc(&hks->requests_stayed);
        qapi_event_send_hyperkernel_vcpu_stays(k, hks->node);
        return;
    }
    hk_vcpu_export(cs, target, HYPERKERNEL_MOVE_REASON_REQUEST);
}

/* library callback (event thread): move a vCPU that runs here */
void hk_cb_migrate_request(void *opaque, int from, uint32_t vcpu, int target)
{
    CPUState *cs = qemu_get_cpu(vcpu);

    if (cs && target >= 0 && target < (int)hks->max_nodes) {
        hk_run_on_cpu(cs, hk_request_work, RUN_ON_CPU_HOST_INT(HK_REQUEST(target, 0)));
    }
}

/* QMP (main loop): move vCPU cpu to node target, from any node */
bool hk_move_request(int cpu, int target, Error **errp)
{
    CPUState *cs = qemu_get_cpu(cpu);
    int r = hk_vcpu_migrate_request(hks->hk, cpu, target);

    if (r == 1) {
        async_run_on_cpu(cs, hk_request_work, RUN_ON_CPU_HOST_INT(HK_REQUEST(target, 0)));
    } else if (r == -EHOSTDOWN) {
        error_setg(errp, "node %d is not in the cluster (it never joined, is evacuating or has left): no vCPU moves there", target);
        return false;
    } else if (r < 0) {
        error_setg(errp, "cannot send the request for vCPU %d to the node that runs "
                   "it (node %d as far as node %u knows): %s", cpu,
                   hk_vcpu_location(hks->hk, cpu), hks->node, strerror(-r));
        return false;
    }
    return true;
}

void hk_moves_init(void)
{
    hk_io_hook = hk_io;
    hk_pio_hook = hk_pio;
    hk_force_io_hook = hk_force_io;
    hk_cpu_loop_hook = hk_cpu_loop;
}
