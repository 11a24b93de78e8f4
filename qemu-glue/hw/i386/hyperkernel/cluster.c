/*
 * Software-defined server glue: messages between the nodes' glues.
 *
 * Glue messages (configuration, interrupts, APIC addressing, EOI, where a
 * vCPU runs, shutdown) travel as vCPU blobs with the top bit of the id set,
 * so they share one FIFO per link with the vCPU state itself: an interrupt
 * sent after a vCPU left always arrives after that vCPU's state.
 *
 * What rides on them: the configuration agreement before the guest starts,
 * the directory of where each vCPU runs (owner[], ordered by move count),
 * the shutdown and the barrier that keeps every node's pages available until
 * all nodes have stopped their vCPUs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/units.h"
#include "hw/boards.h"
#include "system/runstate.h"
#include "internal.h"

#define HK_GLUE_BIT 0x80000000u

enum {
    GM_CONFIG = 1,      /* hash, vcpu mask, budget */
    GM_IRQ,             /* cpu, mode, vec, trig */
    GM_APIC_ADDR,       /* cpu, id, log_dest, dest_mode, apicbase */
    GM_EOI,             /* vec */
    GM_VCPU_AT,         /* cpu, node, move count */
    GM_SHUTDOWN,        /* - */
    GM_STOPPED,         /* - */
};

typedef struct HkGlueMsg {
    uint32_t type;
    uint32_t cpu;
    int32_t a, b, c;
    uint32_t pad;
    uint64_t x, y;
    uint8_t hash[32];
} HkGlueMsg;

static void hk_msg_send(int target, const HkGlueMsg *m)
{
    int r = hk_vcpu_send(hks->hk, target, HK_GLUE_BIT | m->type, m, sizeof(*m));

    if (r < 0 && !hks->shutting_down) {
        warn_report("hyperkernel: glue message %u to node %d failed: %s",
                    m->type, target, strerror(-r));
    }
}

static void hk_msg_broadcast(const HkGlueMsg *m)
{
    for (int i = 0; i < (int)hks->nodes; i++) {
        if (i != (int)hks->node) {
            hk_msg_send(i, m);
        }
    }
}

/* ------------------------------------------------------------------ */
/* configuration agreement */

/*
 * Every node sends its machine hash, its vCPUs and its budget and waits for
 * all peers'; each node then checks the same facts, so all refuse together.
 */
void hk_cluster_agree(MachineState *ms)
{
    HkGlueMsg m = { .type = GM_CONFIG, .x = hks->local_mask, .y = hks->budget };
    int64_t deadline = hk_now() + 10 * NANOSECONDS_PER_SECOND;
    uint64_t all = 0, ncpu = ms->smp.cpus;
    uint64_t budget_sum = 0;
    bool unlimited = false;

    memcpy(m.hash, hks->hash, sizeof(m.hash));
    hk_msg_broadcast(&m);

    qemu_mutex_lock(&hks->lock);
    while (hks->configs_seen < (int)hks->nodes - 1 && !hks->config_error[0]) {
        if (hk_now() > deadline) {
            qemu_mutex_unlock(&hks->lock);
            hk_fatal("timed out waiting for the configuration of the other nodes");
        }
        qemu_cond_timedwait(&hks->cond, &hks->lock, 100);
    }
    qemu_mutex_unlock(&hks->lock);
    if (hks->config_error[0]) {
        hk_fatal("%s; every node needs the same -machine, -m, -smp, -kernel, "
                 "-initrd, -append and nodes/epoch", hks->config_error);
    }
    hks->peer_mask[hks->node] = hks->local_mask;
    hks->peer_budget[hks->node] = hks->budget;
    for (int i = 0; i < (int)hks->nodes; i++) {
        if (all & hks->peer_mask[i]) {
            hk_fatal("a vCPU in mask 0x%" PRIx64 " of node %d is also placed on "
                     "another node", all & hks->peer_mask[i], i);
        }
        all |= hks->peer_mask[i];
        for (int k = 0; k < HK_MAX_VCPUS; k++) {
            if (hks->peer_mask[i] & (1ull << k)) {
                if (k >= (int)ncpu) {
                    hk_fatal("node %d places vCPU %d, but the guest has only %"
                             PRIu64 " vCPUs", i, k, ncpu);
                }
                hks->owner[k] = i;
                hks->home[k] = i;
            }
        }
        if (hks->peer_budget[i] == 0) {
            unlimited = true;
        }
        budget_sum += hks->peer_budget[i];
    }
    for (int k = 0; k < (int)ncpu; k++) {
        if (!(all & (1ull << k))) {
            hk_fatal("vCPU %d is placed on no node (vcpus= of every node together "
                     "must list each vCPU exactly once)", k);
        }
    }
    if (!unlimited && budget_sum < ms->ram_size) {
        hk_fatal("the budgets of all nodes add up to %" PRIu64 " MiB, less than "
                 "the guest RAM (%" PRIu64 " MiB)", budget_sum / MiB,
                 (uint64_t)ms->ram_size / MiB);
    }
}

/* ------------------------------------------------------------------ */
/* where each vCPU runs */

/* vCPU thread, BQL held: the vCPU's state is on its way to target */
void hk_cluster_vcpu_left(int cpu, int target)
{
    hks->owner[cpu] = target;
    hks->mig_seq[cpu]++;
}

/* the send failed: it runs here again */
void hk_cluster_vcpu_stayed(int cpu)
{
    hks->mig_seq[cpu]--;
    hks->owner[cpu] = hks->node;
}

/* vCPU thread, BQL held: its state is loaded here; tell everyone */
void hk_cluster_vcpu_arrived(int cpu)
{
    HkGlueMsg m = { .type = GM_VCPU_AT, .cpu = cpu, .a = hks->node,
                    .x = hks->mig_seq[cpu] };

    hks->owner[cpu] = hks->node;
    hk_msg_broadcast(&m);
}

/*
 * Updates come from different nodes over different links, so they may arrive
 * out of order: the move count decides.  Only for vCPUs not running here.
 */
static void hk_vcpu_at_receive(const HkGlueMsg *m)
{
    CPUState *cs;

    if (m->cpu >= HK_MAX_VCPUS || m->a < 0 || m->a >= (int)hks->nodes ||
        m->a == (int)hks->node) {
        return;
    }
    cs = qemu_get_cpu(m->cpu);
    qemu_mutex_lock(&hks->lock);
    if (cs && qatomic_read(&cs->hk_parked) && m->x > hks->mig_seq[m->cpu]) {
        hks->owner[m->cpu] = m->a;
        hks->mig_seq[m->cpu] = m->x;
    }
    qemu_mutex_unlock(&hks->lock);
}

/* ------------------------------------------------------------------ */
/* interrupts */

void hk_cluster_send_irq(int node, int cpu, int mode, int vec, int trig)
{
    HkGlueMsg m = { .type = GM_IRQ, .cpu = cpu, .a = mode, .b = vec, .c = trig };

    hk_msg_send(node, &m);
}

void hk_cluster_broadcast_apic_addr(int cpu, int id, int log_dest,
                                    int dest_mode, uint64_t apicbase)
{
    HkGlueMsg m = { .type = GM_APIC_ADDR, .cpu = cpu, .a = id, .b = log_dest,
                    .c = dest_mode, .x = apicbase };

    hk_msg_broadcast(&m);
}

void hk_cluster_send_eoi(int vec)
{
    HkGlueMsg m = { .type = GM_EOI, .a = vec };

    hk_msg_send(0, &m);
}

/* ------------------------------------------------------------------ */
/* shutdown */

void hk_cluster_broadcast_shutdown(void)
{
    HkGlueMsg m = { .type = GM_SHUTDOWN };

    if (!hks->shutting_down) {
        hks->shutting_down = true;
        hk_msg_broadcast(&m);
    }
}

/*
 * atexit, after vm_shutdown stopped every vCPU here: no node may leave (and
 * take its pages) while a peer may still need them to stop its vCPUs.
 */
void hk_cluster_stopped_barrier(void)
{
    HkGlueMsg m = { .type = GM_STOPPED };
    int64_t deadline;

    hks->shutting_down = true;
    hk_msg_broadcast(&m);
    deadline = hk_now() + 5 * NANOSECONDS_PER_SECOND;
    qemu_mutex_lock(&hks->lock);
    while (hks->stopped_seen < (int)hks->nodes - 1 && hk_now() < deadline &&
           !hk_node_failed(hks->hk)) {
        qemu_cond_timedwait(&hks->cond, &hks->lock, 50);
    }
    qemu_mutex_unlock(&hks->lock);
}

/* ------------------------------------------------------------------ */
/* receive */

typedef struct HkMainMsg {
    int from;
    HkGlueMsg m;
} HkMainMsg;

/* main loop, BQL held, in arrival order */
static void hk_main_msg(void *opaque)
{
    HkMainMsg *b = opaque;
    HkGlueMsg *m = &b->m;

    switch (m->type) {
    case GM_APIC_ADDR:
        hk_apic_addr_receive(m->cpu, m->a, m->b, m->c, m->x);
        break;
    case GM_EOI:
        hk_eoi_receive(m->a);
        break;
    case GM_SHUTDOWN:
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_QMP_QUIT);
        break;
    }
    g_free(b);
}

static void hk_glue_receive(int from, const HkGlueMsg *m)
{
    switch (m->type) {
    case GM_CONFIG:
        qemu_mutex_lock(&hks->lock);
        if (memcmp(m->hash, hks->hash, sizeof(hks->hash)) != 0) {
            snprintf(hks->config_error, sizeof(hks->config_error),
                     "node %d has a different machine definition (machine type, "
                     "RAM size, vCPU count, kernel, initrd, command line or node "
                     "count differ)", from);
        }
        hks->peer_mask[from] = m->x;
        hks->peer_budget[from] = m->y;
        hks->configs_seen++;
        qemu_cond_broadcast(&hks->cond);
        qemu_mutex_unlock(&hks->lock);
        break;
    case GM_STOPPED:
        qemu_mutex_lock(&hks->lock);
        hks->stopped_seen++;
        qemu_cond_broadcast(&hks->cond);
        qemu_mutex_unlock(&hks->lock);
        break;
    case GM_IRQ:
        hk_irq_receive(from, m->cpu, m->a, m->b, m->c);
        break;
    case GM_VCPU_AT:
        hk_vcpu_at_receive(m);
        break;
    case GM_SHUTDOWN:
        hks->shutting_down = true;
        /* fall through */
    case GM_APIC_ADDR:
    case GM_EOI: {
        HkMainMsg *b = g_new(HkMainMsg, 1);

        b->from = from;
        b->m = *m;
        hk_run_in_main_loop(hk_main_msg, b);
        break;
    }
    default:
        warn_report("hyperkernel: unknown glue message %u from node %d",
                    m->type, from);
    }
}

/* library callback (event thread): vCPU state or a glue message arrived */
void hk_cb_vcpu_receive(void *opaque, int from, uint32_t id,
                        const void *blob, size_t len)
{
    CPUState *cs;

    if (id & HK_GLUE_BIT) {
        if (len != sizeof(HkGlueMsg)) {
            warn_report("hyperkernel: bad glue message from node %d", from);
            return;
        }
        hk_glue_receive(from, blob);
        return;
    }
    cs = qemu_get_cpu(id);
    if (!cs) {
        warn_report("hyperkernel: state of unknown vCPU %u from node %d", id, from);
        return;
    }
    hk_vcpu_import(cs, from, blob, len);
}
