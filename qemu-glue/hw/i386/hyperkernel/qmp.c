/*
 * Software-defined server glue: QMP commands.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-hyperkernel.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "hw/boards.h"
#include "cpu.h"
#include "internal.h"

/* What a vCPU of ours does, as the guest would count it (query-hyperkernel). */
static const char *hk_vcpu_state(CPUState *cs)
{
    CPUX86State *env = &X86_CPU(cs)->env;

    if (!qatomic_read(&cs->halted)) {
        return "running";
    }
    /* Linux parks an offline CPU in a halt loop with interrupts off
     * (hlt_play_dead); an AP never started waits halted with IF clear */
    return (env->eflags & IF_MASK) ? "idle" : "offline";
}

static QDict *hk_glue_stats(void)
{
    QDict *glue = qdict_new();

    qdict_put_int(glue, "vcpu-migrations-out", hks->mig_out);
    qdict_put_int(glue, "vcpu-migrations-in", hks->mig_in);
    qdict_put_int(glue, "vcpu-state-bytes-last", hks->mig_bytes_last);
    qdict_put_int(glue, "vcpu-state-bytes-total", hks->mig_bytes_total);
    qdict_put_int(glue, "vcpu-migration-latency-ns-last", hks->mig_lat_last);
    qdict_put_int(glue, "vcpu-migration-latency-ns-max", hks->mig_lat_max);
    qdict_put_int(glue, "vcpu-migration-latency-ns-total", hks->mig_lat_total);
    qdict_put_int(glue, "interrupts-forwarded", hks->irq_fwd_sent);
    qdict_put_int(glue, "interrupts-received", hks->irq_fwd_recv);
    qdict_put_int(glue, "eoi-forwarded", hks->eoi_fwd);
    qdict_put_int(glue, "apic-addr-broadcasts", hks->addr_bcast);
    qdict_put_int(glue, "io-exits-pio", hks->io_moves_pio);
    qdict_put_int(glue, "io-exits-mmio", hks->io_moves_mmio);
    qdict_put_int(glue, "io-exits", hks->io_moves_pio + hks->io_moves_mmio);
    qdict_put_int(glue, "io-returns", hks->io_returns);
    qdict_put_int(glue, "policy-moves", hks->policy_moves);
    qdict_put_int(glue, "pulls", hks->pulls);
    qdict_put_int(glue, "pulls-raced", hks->pulls_raced);
    qdict_put_int(glue, "pulls-outside-tb", hks->pulls_outside_tb);
    qdict_put_int(glue, "pulls-not-in-fault", hks->pulls_not_in_fault);
    qdict_put_int(glue, "interrupts-unlicensed", hks->irqs_unlicensed);
    qdict_put_int(glue, "requests-stayed", hks->requests_stayed);
    qdict_put_int(glue, "requests-followed", hks->requests_followed);
    qdict_put_int(glue, "pause-spins", qatomic_read(&hks->pause_spins));
    qdict_put_int(glue, "pause-yields", qatomic_read(&hks->pause_yields));
    qdict_put_int(glue, "tb-invalidate-immediate", hks->tbinval_try_ok);
    qdict_put_int(glue, "tb-invalidate-deferred", hks->tbinval_deferred);
    qdict_put_int(glue, "tb-invalidate-arrival-deferred", hks->tbinval_arrival_deferred);
    qdict_put_int(glue, "tb-acks-released", hks->tbinval_acks_released);
    qdict_put_int(glue, "tb-ack-early-stall", hks->tbinval_ack_early_stall);
    qdict_put_int(glue, "tb-ack-early-timeout", hks->tbinval_ack_early_timeout);
    qdict_put_int(glue, "tb-invalidate-after-store", hks->tbinval_after_store);
    qdict_put_int(glue, "tb-store-wake-deferred", hks->tbinval_wake_deferred);
    qdict_put_int(glue, "tb-store-wake-slow", hks->tbinval_wake_slow);
    return glue;
}

HyperkernelInfo *qmp_query_hyperkernel(Error **errp)
{
    HyperkernelInfo *info;
    MachineState *ms = MACHINE(qdev_get_machine());
    g_autofree char *js = NULL;
    QObject *stats;
    intList **lv, **loc, **home;
    HyperkernelVcpuStateList **states;
    CPUState *cs;

    if (!hks || !hks->started) {
        error_setg(errp, "hyperkernel is not running");
        return NULL;
    }
    info = g_new0(HyperkernelInfo, 1);
    info->node = hks->node;
    info->nodes = hks->nodes;
    lv = &info->local_vcpus;
    states = &info->vcpu_states;
    CPU_FOREACH(cs) {
        if (!cs->hk_parked) {
            HyperkernelVcpuState *vs = g_new0(HyperkernelVcpuState, 1);

            QAPI_LIST_APPEND(lv, cs->cpu_index);
            vs->cpu_index = cs->cpu_index;
            vs->state = g_strdup(hk_vcpu_state(cs));
            QAPI_LIST_APPEND(states, vs);
        }
    }
    info->licensed_vcpus = hks->max_vcpus;
    loc = &info->vcpu_location;
    home = &info->vcpu_home;
    for (int k = 0; k < (int)ms->smp.cpus && k < HK_MAX_VCPUS; k++) {
        QAPI_LIST_APPEND(loc, hk_vcpu_location(hks->hk, k));
        QAPI_LIST_APPEND(home, hk_vcpu_home(hks->hk, k));
    }
    js = hk_stats_json(hks->hk);
    stats = js ? qobject_from_json(js, NULL) : NULL;
    if (!stats || !qobject_to(QDict, stats)) {
        qobject_unref(stats);
        stats = QOBJECT(qdict_new());
    }
    qdict_put(qobject_to(QDict, stats), "glue", hk_glue_stats());
    info->stats = stats;
    return info;
}

/*
 * Any node: the library takes the request to the node that runs the vCPU
 * (moves.c).  The result is an event on the target node: HYPERKERNEL_VCPU_MIGRATED
 * with reason "request", or HYPERKERNEL_VCPU_STAYS if it was there already.
 */
void qmp_hyperkernel_migrate_vcpu(int64_t cpu_index, int64_t node, Error **errp)
{
    MachineState *ms;

    if (!hks || !hks->started) {
        error_setg(errp, "hyperkernel is not running");
        return;
    }
    ms = MACHINE(qdev_get_machine());
    if (cpu_index < 0 || cpu_index >= ms->smp.cpus || !qemu_get_cpu(cpu_index)) {
        error_setg(errp, "no vCPU %" PRId64, cpu_index);
        return;
    }
    if (node < 0 || node >= hks->max_nodes) {
        error_setg(errp, "no node %" PRId64 " (nodes: 0-%u)", node, hks->max_nodes - 1);
        return;
    }
    hk_move_request(cpu_index, node, errp);
}

void qmp_hyperkernel_set_knob(const char *name, int64_t value, Error **errp)
{
    char why[160] = "";

    if (!hks || !hks->started) {
        error_setg(errp, "hyperkernel is not running");
        return;
    }
    if (value < 0) {
        error_setg(errp, "%s=%" PRId64 " is out of range: knobs are not negative",
                   name, value);
        return;
    }
    if (hk_set_knob(hks->hk, name, (uint64_t)value, why, sizeof(why)) < 0) {
        error_setg(errp, "%s", why);
    }
}
