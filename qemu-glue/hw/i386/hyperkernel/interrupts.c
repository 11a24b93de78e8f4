/*
 * Software-defined server glue: interrupts.
 *
 * - An interrupt for a parked vCPU goes to the node that runs it (the
 *   library's location directory knows which), on the same ordered link as
 *   the vCPU's state; the receiver delivers it in the vCPU's thread, FIFO
 *   with the vCPU's import.  If the vCPU left meanwhile, it follows.
 * - The addressing state of every LAPIC (ID, LDR, DFR, APICBASE) is
 *   replicated to its parked copies: the sender of an IPI computes the
 *   destination set from them.
 * - A level-triggered EOI off the io-node goes to the io-node's IOAPIC.
 * - Device models off the io-node are inert: their interrupts are dropped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "hw/i386/apic_internal.h"
#include "hw/intc/ioapic.h"
#include "system/hk-hooks.h"
#include "target/i386/cpu.h"
#include "internal.h"

/* ------------------------------------------------------------------ */
/* forwarding */

/*
 * On the wire an interrupt is what the ICR says: delivery mode (3 bits),
 * vector, trigger mode.  apic.c's INIT level de-assert (APIC_HK_DM_INIT_DEASSERT,
 * not a delivery mode) is INIT with the level trigger, as in the ICR; a
 * plain INIT is always sent edge-triggered.
 */
static struct hk_irq hk_irq_encode(int cpu, int mode, int vec, int trig)
{
    if (mode == APIC_HK_DM_INIT_DEASSERT) {
        return (struct hk_irq){ .vcpu = cpu, .delivery_mode = APIC_DM_INIT,
                                .vector = 0, .trigger_mode = 1 };
    }
    return (struct hk_irq){ .vcpu = cpu, .delivery_mode = mode, .vector = vec,
                            .trigger_mode = trig };
}

static void hk_irq_deliver(APICCommonState *s, const struct hk_irq *irq)
{
    if (irq->delivery_mode == APIC_DM_INIT && irq->trigger_mode) {
        apic_deliver_local(s, APIC_HK_DM_INIT_DEASSERT, 0, 0);
    } else {
        apic_deliver_local(s, irq->delivery_mode, irq->vector, irq->trigger_mode);
    }
}

static void hk_irq_send_or_warn(const struct hk_irq *irq)
{
    int r = hk_irq_send(hks->hk, irq);

    if (r < 0 && !hk_shutting_down(hks->hk) && !hk_node_failed(hks->hk)) {
        warn_report("hyperkernel: interrupt (vector %d) for vCPU %u lost: %s",
                    irq->vector, irq->vcpu, strerror(-r));
    }
}

/*
 * An INIT or SIPI from a CPU in long mode: the OS starting a CPU.  The
 * firmware (16/32-bit) starts every AP once to count them, and SeaBIOS
 * waits for all of them, so it must reach the unlicensed ones too; the OS
 * never does.  (A 32-bit guest kernel would get past this: we run x86_64.)
 */
static bool hk_os_starts_cpu(int mode)
{
    if (mode != APIC_DM_INIT && mode != APIC_DM_SIPI && mode != APIC_HK_DM_INIT_DEASSERT) {
        return false;
    }
    return current_cpu && (X86_CPU(current_cpu)->env.hflags & HF_LMA_MASK);
}

/* apic.c, for every target LAPIC of a message: true if sent elsewhere */
static bool hk_apic_forward(void *opaque, int mode, int vec, int trig)
{
    APICCommonState *t = opaque;
    CPUState *cs = CPU(t->cpu);
    struct hk_irq irq = hk_irq_encode(cs->cpu_index, mode, vec, trig);

    if (!hk_vcpu_licensed(cs->cpu_index) && hk_os_starts_cpu(mode)) {
        /* beyond the licence: the OS's INIT and SIPI go nowhere, so the
         * guest sees a CPU that does not come up ("failed to boot") */
        qatomic_inc(&hks->irqs_unlicensed);
        return true;
    }
    if (!qatomic_read(&cs->hk_parked)) {
        return false;
    }
    qatomic_inc(&hks->irq_fwd_sent);
    hk_irq_send_or_warn(&irq);
    return true;
}

/* the target vCPU's thread, BQL held */
static void hk_irq_work(CPUState *cs, run_on_cpu_data d)
{
    struct hk_irq *irq = d.host_ptr;
    APICCommonState *s = APIC_COMMON(X86_CPU(cs)->apic_state);

    if (cs->hk_parked) {
        /* it left meanwhile: follow it (FIFO puts this behind its state) */
        hk_irq_send_or_warn(irq);
    } else {
        hk_irq_deliver(s, irq);
    }
    g_free(irq);
}

/* library callback: an interrupt for a vCPU that runs here */
void hk_cb_irq(void *opaque, int from, const struct hk_irq *irq)
{
    CPUState *cs = qemu_get_cpu(irq->vcpu);

    if (!cs) {
        return;
    }
    qatomic_inc(&hks->irq_fwd_recv);
    hk_run_on_cpu(cs, hk_irq_work, RUN_ON_CPU_HOST_PTR(g_memdup2(irq, sizeof(*irq))));
}

/* ------------------------------------------------------------------ */
/* addressing */

/* apic.c, after a write to the ID, LDR, DFR or APICBASE of a local LAPIC */
static void hk_apic_addr(void *opaque)
{
    APICCommonState *s = opaque;
    struct hk_apic_addr a = { .vcpu = CPU(s->cpu)->cpu_index, .apic_id = s->id,
                              .log_dest = s->log_dest, .dest_mode = s->dest_mode,
                              .apicbase = s->apicbase };

    qatomic_inc(&hks->addr_bcast);
    hk_apic_addr_broadcast(hks->hk, &a);
}

/* main loop, BQL held, in arrival order */
static void hk_apic_addr_apply(void *opaque)
{
    struct hk_apic_addr *a = opaque;
    CPUState *cs = qemu_get_cpu(a->vcpu);

    if (cs && cs->hk_parked) {
        APICCommonState *s = APIC_COMMON(X86_CPU(cs)->apic_state);

        s->id = a->apic_id;
        s->log_dest = a->log_dest;
        s->dest_mode = a->dest_mode;
        s->apicbase = a->apicbase;
    }
    g_free(a);
}

/* library callback: a vCPU that runs elsewhere changed its addressing */
void hk_cb_apic_addr(void *opaque, int from, const struct hk_apic_addr *addr)
{
    hk_run_in_main_loop(hk_apic_addr_apply, g_memdup2(addr, sizeof(*addr)));
}

/* ------------------------------------------------------------------ */
/* EOI and device interrupts */

static bool hk_apic_eoi(int vec)
{
    if (hk_is_io_node()) {
        return false;
    }
    qatomic_inc(&hks->eoi_fwd);
    hk_eoi_send(hks->hk, 0, vec);
    return true;
}

/* main loop, BQL held */
static void hk_eoi_apply(void *opaque)
{
    ioapic_eoi_broadcast((intptr_t)opaque);
}

/* library callback: a level-triggered EOI for our IOAPIC */
void hk_cb_eoi(void *opaque, int from, int vector)
{
    hk_run_in_main_loop(hk_eoi_apply, (void *)(intptr_t)vector);
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
