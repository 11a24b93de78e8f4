/*
 * Software-defined server glue: moves a vCPU makes on its own.
 *
 * - I/O visits.  Only the io-node has live device models.  A vCPU elsewhere
 *   that touches MMIO, an I/O port, or a node-local RAM/ROM copy whose live
 *   version is on the io-node (BIOS, option ROMs) unwinds to the start of the
 *   instruction (the hooks' callers do that) and moves to the io-node, where
 *   the instruction runs again against the real devices.  It goes back to its
 *   home node once it has been there 2 ms.
 * - Policy moves.  With policy=vcpu the library asks, on a stall, for the
 *   vCPU to move to the node that likely owns the page.  Pulling a vCPU out
 *   of a userfaultfd fault is not implemented, so the page is fetched anyway
 *   and the vCPU moves at its next exit from the execution loop.
 *
 * Both set export_to[vCPU] and kick the vCPU; hk_cpu_loop, called by
 * the MTTCG loop between cpu_exec and qemu_wait_io_event, does the move.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "hw/i386/apic_internal.h"
#include "system/hk-hooks.h"
#include "internal.h"

#define HK_IO_VISIT_NS (2 * 1000 * 1000)
#define HK_POLICY_MOVE_GAP_NS (20 * 1000 * 1000)

/* vCPU thread, BQL held, outside cpu_exec */
static void hk_cpu_loop(CPUState *cs)
{
    int k = cs->cpu_index;
    int target = qatomic_xchg(&hks->export_to[k], -1);

    if (cs->hk_parked) {
        return;
    }
    if (target >= 0) {
        hk_vcpu_export(cs, target);
        return;
    }
    /* a vCPU visiting the io-node for I/O goes home after a while */
    if (hks->io_arrival[k] && hks->home[k] != (int)hks->node &&
        hk_now() - hks->io_arrival[k] > HK_IO_VISIT_NS) {
        qatomic_inc(&hks->io_returns);
        hks->io_arrival[k] = 0;
        hk_vcpu_export(cs, hks->home[k]);
    }
}

/* vCPU thread: its state was just loaded here */
void hk_moves_vcpu_arrived(int cpu)
{
    hks->last_move_ns[cpu] = hk_now();
    hks->io_arrival[cpu] = hks->home[cpu] == (int)hks->node ? 0 : hk_now();
}

static void hk_move_to_io_node(CPUState *cpu)
{
    qatomic_set(&hks->export_to[cpu->cpu_index], 0);
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

void hk_cb_stall(void *opaque, const struct hk_stall *stall,
                 struct hk_decision *decision)
{
    int k = stall->vcpu;

    /* the library does not know the vCPU of a thread: map the tid */
    for (int i = 0; k < 0 && i < HK_MAX_VCPUS; i++) {
        if (hks->thread_ids[i] == stall->tid) {
            k = i;
        }
    }
    /* vCPU 0 receives the legacy PIC and boots the machine: keep it on node 0 */
    if (decision->kind == HK_MOVE_VCPU && k > 0 && k < HK_MAX_VCPUS &&
        decision->target_node >= 0 &&
        decision->target_node < (int)hks->nodes &&
        decision->target_node != (int)hks->node &&
        hk_now() - hks->last_move_ns[k] > HK_POLICY_MOVE_GAP_NS) {
        CPUState *cs = qemu_get_cpu(k);

        if (cs && !qatomic_read(&cs->hk_parked) &&
            qatomic_cmpxchg(&hks->export_to[k], -1, decision->target_node) == -1) {
            hks->home[k] = decision->target_node;
            qatomic_inc(&hks->policy_moves);
            cpu_exit(cs);
        }
    }
    decision->kind = HK_BRING_PAGE;
}

void hk_moves_init(void)
{
    hk_io_hook = hk_io;
    hk_pio_hook = hk_pio;
    hk_force_io_hook = hk_force_io;
    hk_cpu_loop_hook = hk_cpu_loop;
}
