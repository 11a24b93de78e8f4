/*
 * Software-defined server glue: a node joins the running guest.
 *
 * "-object hyperkernel,node=J,nodes=N,max-nodes=M,join=on,..." starts a
 * process for slot J (N <= J < M) of a cluster that runs already.  The
 * library dials every node, authenticates, compares the machine definition
 * and learns where each vCPU runs and who is home for each page (join.c).
 * All vCPUs are parked here at first; they come by migration.
 *
 * A node already in the cluster hears on_peer_joined: the library has told
 * the joiner everything it keeps, and the glue sends what only QEMU keeps,
 * the APIC addressing (ID, LDR, DFR, APICBASE) of the vCPUs that run here:
 * the joiner computes IPI destinations from its parked copies (§5 of
 * DESIGN.md), which saw none of the guest's writes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "hw/i386/apic_internal.h"
#include "internal.h"

/* main loop, BQL held: each local vCPU's addressing, to every node */
static void hk_joined_bh(void *opaque)
{
    int node = GPOINTER_TO_INT(opaque);
    g_autofree char *detail = g_strdup_printf("node %d joined the cluster", node);
    CPUState *cs;

    CPU_FOREACH(cs) {
        APICCommonState *s;
        struct hk_apic_addr a;

        if (cs->hk_parked || !X86_CPU(cs)->apic_state) {
            continue;
        }
        s = APIC_COMMON(X86_CPU(cs)->apic_state);
        a = (struct hk_apic_addr){ .vcpu = cs->cpu_index, .apic_id = s->id,
                                   .log_dest = s->log_dest, .dest_mode = s->dest_mode,
                                   .apicbase = s->apicbase };
        hk_apic_addr_broadcast(hks->hk, &a);
    }
    qapi_event_send_hyperkernel_node_state(node, "joined", detail);
}

/* library callback (event thread): a node joined */
void hk_cb_peer_joined(void *opaque, int node)
{
    hk_run_in_main_loop(hk_joined_bh, GINT_TO_POINTER(node));
}
