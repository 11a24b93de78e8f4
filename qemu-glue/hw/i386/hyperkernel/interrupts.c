/*
 * Software-defined server glue: interrupts.
 *
 * - An interrupt for a parked vCPU goes to the node that runs it, on the same
 *   ordered link as the vCPU's state; the receiver delivers it in the vCPU's
 *   thread, FIFO with the vCPU's import.  If the vCPU left meanwhile, the
 *   interrupt follows it.
 * - The addressing state of every LAPIC (ID, LDR, DFR, APICBASE) is
 *   replicated to its parked copies: the sender of an IPI computes the
 *   destination set from them.
 * - A level-triggered EOI off the io-node goes to the io-node's IOAPIC.
 * - Device models off the io-node are inert: their interrupts are dropped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "hw/i386/apic_internal.h"
#include "hw/intc/ioapic.h"
#include "system/hk-hooks.h"
#include "target/i386/cpu.h"
#include "internal.h"

/* ------------------------------------------------------------------ */
/* forwarding */

typedef struct HkIrq {
    int mode, vec, trig;
} HkIrq;

/* apic.c, for every target LAPIC of a message: true if sent elsewhere */
static bool hk_apic_forward(void *opaque, int mode, int vec, int trig)
{
    APICCommonState *t = opaque;
    CPUState *cs = CPU(t->cpu);

    if (!qatomic_read(&cs->hk_parked)) {
        return false;
    }
    qatomic_inc(&hks->irq_fwd_sent);
    hk_cluster_send_irq(hks->owner[cs->cpu_index], cs->cpu_index, mode, vec, trig);
    return true;
}

/* the target vCPU's thread, BQL held */
static void hk_irq_work(CPUState *cs, run_on_cpu_data d)
{
    HkIrq *irq = d.host_ptr;
    APICCommonState *s = APIC_COMMON(X86_CPU(cs)->apic_state);

    if (cs->hk_parked) {
        /* it left meanwhile: follow it (FIFO puts this behind its state) */
        hk_cluster_send_irq(hks->owner[cs->cpu_index], cs->cpu_index,
                            irq->mode, irq->vec, irq->trig);
    } else {
        apic_deliver_local(s, irq->mode, irq->vec, irq->trig);
    }
    g_free(irq);
}

/* event thread */
void hk_irq_receive(int from, int cpu, int mode, int vec, int trig)
{
    CPUState *cs = qemu_get_cpu(cpu);
    HkIrq *irq;

    if (!cs) {
        return;
    }
    irq = g_new(HkIrq, 1);
    irq->mode = mode;
    irq->vec = vec;
    irq->trig = trig;
    qatomic_inc(&hks->irq_fwd_recv);
    hk_run_on_cpu(cs, hk_irq_work, RUN_ON_CPU_HOST_PTR(irq));
}

/* ------------------------------------------------------------------ */
/* addressing */

/* apic.c, after a write to the ID, LDR, DFR or APICBASE of a local LAPIC */
static void hk_apic_addr(void *opaque)
{
    APICCommonState *s = opaque;

    if (!hks->started) {
        return;     /* the reset before the start: every node does the same */
    }
    qatomic_inc(&hks->addr_bcast);
    hk_cluster_broadcast_apic_addr(CPU(s->cpu)->cpu_index, s->id, s->log_dest,
                                   s->dest_mode, s->apicbase);
}

/* main loop, BQL held, in arrival order */
void hk_apic_addr_receive(int cpu, int id, int log_dest, int dest_mode,
                          uint64_t apicbase)
{
    CPUState *cs = qemu_get_cpu(cpu);

    if (cs && cs->hk_parked) {
        APICCommonState *s = APIC_COMMON(X86_CPU(cs)->apic_state);

        s->id = id;
        s->log_dest = log_dest;
        s->dest_mode = dest_mode;
        s->apicbase = apicbase;
    }
}

/* ------------------------------------------------------------------ */
/* EOI and device interrupts */

static bool hk_apic_eoi(int vec)
{
    if (hk_is_io_node()) {
        return false;
    }
    qatomic_inc(&hks->eoi_fwd);
    hk_cluster_send_eoi(vec);
    return true;
}

/* main loop, BQL held */
void hk_eoi_receive(int vec)
{
    ioapic_eoi_broadcast(vec);
}

static bool hk_device_irq_blocked(void)
{
    return !hk_is_io_node();
}

void hk_irq_init(void)
{
    hk_apic_forward_hook = hk_apic_forward;
    hk_apic_addr_hook = hk_apic_addr;
    hk_apic_eoi_hook = hk_apic_eoi;
    hk_device_irq_blocked_hook = hk_device_irq_blocked;
}
