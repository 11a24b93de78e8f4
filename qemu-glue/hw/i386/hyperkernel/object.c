/*
 * Software-defined server glue: the hyperkernel object and the machine set-up.
 *
 * "-object hyperkernel,node=I,nodes=N,peers=A0;A1;...,secret=ID,vcpus=L,
 * budget=SIZE,policy=page|vcpu|cost|learned,epoch=NS" makes this QEMU process node I of a
 * software-defined server.  max-nodes=M (peers then lists M addresses)
 * keeps slots N..M-1 for nodes that join while the guest runs; such a node
 * is started with join=on (membership.c).
 *
 * The object is created before the machine (object_create_early), so
 * `complete` only validates and creates the library node.  At
 * machine-init-done (after RAM, devices and vCPUs exist, before the first
 * reset writes anything) the glue registers guest RAM with the library,
 * joins the mesh, agrees on the machine with every peer (the library
 * compares and refuses), parks the vCPUs that run elsewhere, sets the common
 * clock epoch and installs the hooks.
 *
 * A guest poweroff on any node ends every node; each waits at exit until the
 * others have stopped their vCPUs too, so no node takes its pages away while
 * a peer still needs them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "qemu/madvise.h"
#include "qemu/module.h"
#include "qemu/rcu.h"
#include "qom/object_interfaces.h"
#include "crypto/secret_common.h"
#include "exec/ramblock.h"
#include "exec/ramlist.h"
#include "hw/boards.h"
#include "hw/i386/apic_internal.h"
#include "system/cpu-timers.h"
#include "system/hk-hooks.h"
#include "system/hostmem.h"
#include "system/runstate.h"
#include "system/system.h"
#include "system/tcg.h"
#include "internal.h"

HyperkernelState *hks;

/* ------------------------------------------------------------------ */
/* guest RAM */

HkRegion *hk_region_of_offset(uint64_t off)
{
    for (int i = 0; i < hks->nregions; i++) {
        HkRegion *r = &hks->regions[i];

        if (off >= r->region_off && off < r->region_off + r->len) {
            return r;
        }
    }
    return NULL;
}

bool hk_mr_is_coherent(MemoryRegion *mr)
{
    for (int i = 0; i < hks->nregions; i++) {
        if (hks->regions[i].rb->mr == mr) {
            return true;
        }
    }
    return false;
}

/*
 * The guest NUMA node whose RAM is backend `owner`, or -1.  NUMA node k's
 * RAM is homed on node k (for k below nodes=): the guest allocates a
 * thread's fresh pages from the NUMA node of its CPU, and those pages are
 * then untouched RAM homed on the node the vCPU runs on: a first touch there
 * asks no other node (hk_region_set_home).
 */
static int hk_numa_node_of(MachineState *ms, Object *owner)
{
    for (int i = 0; ms->numa_state && i < ms->numa_state->num_nodes; i++) {
        if (ms->numa_state->nodes[i].node_memdev &&
            OBJECT(ms->numa_state->nodes[i].node_memdev) == owner) {
            return i;
        }
    }
    return -1;
}

/*
 * Guest RAM is every memory-backend RAM block (on pc: pc.ram, or one backend
 * per guest NUMA node; the below- and above-4G regions are aliases into it).
 * BIOS, option ROMs and fw_cfg blobs stay node-local: every node loads the
 * same files.
 */
static void hk_register_ram(MachineState *ms)
{
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH(rb) {
        Object *owner = rb->mr ? rb->mr->owner : NULL;
        int64_t off;
        int numa;
        HkRegion *r;

        if (!owner || !object_dynamic_cast(owner, TYPE_MEMORY_BACKEND)) {
            continue;
        }
        if (qemu_ram_is_shared(rb) || rb->fd >= 0 || (rb->flags & RAM_PREALLOC) ||
            rb->used_length != rb->max_length) {
            hk_fatal("guest RAM block %s must be private anonymous memory, not "
                     "shared, file-backed, preallocated or resizeable", rb->idstr);
        }
        if (hks->nregions == HK_MAX_REGIONS) {
            hk_fatal("too many guest RAM blocks");
        }
        /* the unit of coherence is 4 KiB: no THP; and no KSM merging */
        qemu_madvise(rb->host, rb->max_length, QEMU_MADV_NOHUGEPAGE);
        qemu_madvise(rb->host, rb->max_length, QEMU_MADV_UNMERGEABLE);
        off = hk_region_register(hks->hk, rb->host, rb->max_length);
        if (off < 0) {
            hk_fatal("cannot register guest RAM block %s with userfaultfd: %s",
                     rb->idstr, strerror(-off));
        }
        numa = hk_numa_node_of(ms, owner);
        if (numa >= 0 && numa < (int)hks->nodes) {
            int e = hk_region_set_home(hks->hk, off, rb->max_length, numa);
            if (e < 0) {
                hk_fatal("cannot home guest RAM block %s (NUMA node %d) on node %d: %s",
                         rb->idstr, numa, numa, strerror(-e));
            }
        }
        r = &hks->regions[hks->nregions++];
        r->rb = rb;
        r->region_off = off;
        r->ram_addr = rb->offset;
        r->len = rb->max_length;
    }
    if (!hks->nregions) {
        hk_fatal("no guest RAM found (a memory-backend RAM block)");
    }
}

/* ------------------------------------------------------------------ */
/* the machine definition every node must share */

static void hk_hash_file(GChecksum *ck, const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    g_checksum_update(ck, (const guchar *)(path ? "file" : "none"), 4);
    if (path && g_file_get_contents(path, &data, &len, NULL)) {
        g_checksum_update(ck, (const guchar *)data, len);
    }
}

static void hk_compute_hash(MachineState *ms, uint8_t hash[32])
{
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree char *desc = g_strdup_printf(
        "type=%s ram=%" PRIu64 " cpus=%u maxcpus=%u licensed=%u nodes=%u max-nodes=%u "
        "append=%s epoch=%" PRId64,
        object_get_typename(OBJECT(ms)), (uint64_t)ms->ram_size,
        ms->smp.cpus, ms->smp.max_cpus, hks->max_vcpus, hks->nodes, hks->max_nodes,
        ms->kernel_cmdline ? ms->kernel_cmdline : "",
        hks->has_epoch ? hks->epoch : -1);
    gsize n = 32;

    g_checksum_update(ck, (const guchar *)desc, strlen(desc));
    /* the guest NUMA layout decides the pages' homes (hk_register_ram) */
    for (int i = 0; ms->numa_state && i < ms->numa_state->num_nodes; i++) {
        g_autofree char *node = g_strdup_printf(
            " numa%d=%" PRIu64 "@%s", i, ms->numa_state->nodes[i].node_mem,
            ms->numa_state->nodes[i].node_memdev ? "memdev" : "none");
        g_checksum_update(ck, (const guchar *)node, strlen(node));
    }
    hk_hash_file(ck, ms->kernel_filename);
    hk_hash_file(ck, ms->initrd_filename);
    g_checksum_get_digest(ck, hash, &n);
    g_checksum_free(ck);
}

static void hk_agree(MachineState *ms)
{
    struct hk_machine m = { .vcpus = ms->smp.cpus, .vcpu_mask = hks->local_mask };
    char why[256];
    int r;

    hk_compute_hash(ms, m.hash);
    r = hk_cluster_agree(hks->hk, &m, why, sizeof(why));
    if (r < 0) {
        hk_fatal("%s; every node needs the same -machine, -m, -smp, -kernel, "
                 "-initrd, -append, max-vcpus and nodes/max-nodes/epoch, and vcpus= of all nodes "
                 "together must name each vCPU once", why);
    }
}

/* ------------------------------------------------------------------ */
/* life cycle */

/* a vCPU thread starts (BQL held), before the library runs */
static void hk_vcpu_thread_init(CPUState *cpu)
{
    if (cpu->cpu_index < HK_MAX_VCPUS) {
        hks->thread_ids[cpu->cpu_index] = cpu->thread_id;
    }
    hk_peer_loss_thread_init();
    hk_pull_thread_init();
}

static void hk_machine_init_done(Notifier *n, void *data)
{
    MachineState *ms = MACHINE(qdev_get_machine());
    CPUState *cs;
    int r;

    if (!tcg_enabled() || !qemu_tcg_mttcg_enabled()) {
        hk_fatal("needs -accel tcg,thread=multi");
    }
    if (ms->smp.max_cpus > HK_MAX_VCPUS) {
        hk_fatal("at most %d vCPUs", HK_MAX_VCPUS);
    }
    if (hks->max_vcpus > ms->smp.cpus) {
        hk_fatal("max-vcpus=%u is more than the %u vCPUs of -smp: license at most %u",
                 hks->max_vcpus, ms->smp.cpus, ms->smp.cpus);
    }
    if (!hks->max_vcpus) {
        hks->max_vcpus = ms->smp.cpus;
    }
    hk_peer_loss_thread_init();     /* the main thread runs the devices */
    hk_register_ram(ms);
    hk_tb_init();

    r = hk_node_start(hks->hk);
    if (r < 0) {
        hk_fatal("cannot %s the cluster (peers %s): %s%s", hks->join ? "join" : "form",
                 hks->peers ? hks->peers : "", strerror(-r),
                 hks->join ? "; the reason is on the line above" : "");
    }
    hk_agree(ms);
    CPU_FOREACH(cs) {
        cs->hk_parked = !(hks->local_mask & (1ull << cs->cpu_index));
        /* every vCPU has a thread here; parked ones run when they arrive */
        if (cs->cpu_index < HK_MAX_VCPUS) {
            hk_thread_set_vcpu(hks->hk, hks->thread_ids[cs->cpu_index],
                               cs->cpu_index);
        }
    }
    if (hks->has_epoch) {
        cpu_ticks_set_epoch(hks->epoch);
    }
    hks->started = true;
    hk_irq_init();
    hk_pull_init();
    hk_moves_init();
    qapi_event_send_hyperkernel_node_state(hks->node, "up", "joined the cluster");
}

static void hk_shutdown_notify(Notifier *n, void *data)
{
    if (!hks->started || hk_node_failed(hks->hk) || hks->evacuated) {
        return;
    }
    hk_shutdown_broadcast(hks->hk);
}

static void hk_shutdown_apply(void *opaque)
{
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_QMP_QUIT);
}

/* library callback: a peer's guest powered off */
static void hk_cb_shutdown(void *opaque, int from)
{
    hk_run_in_main_loop(hk_shutdown_apply, NULL);
}

/* atexit: after vm_shutdown every vCPU here is stopped */
static void hk_atexit(void)
{
    if (!hks || !hks->started || hk_node_failed(hks->hk)) {
        return;
    }
    if (hks->evacuated) {
        /* the guest runs on without us: no barrier, only the BYE */
        hk_node_shutdown(hks->hk);
        return;
    }
    if (hk_stopped_barrier(hks->hk, 5000) < 0) {
        warn_report("hyperkernel node %u: a peer did not stop within 5 s; leaving anyway",
                    hks->node);
    }
    hk_node_shutdown(hks->hk);
}

/* ------------------------------------------------------------------ */
/* the QOM object */

static bool hk_parse_vcpus(const char *s, uint64_t *mask, Error **errp)
{
    g_auto(GStrv) parts = NULL;

    *mask = 0;
    if (!s) {
        return true;
    }
    parts = g_strsplit_set(s, ";: ", -1);
    for (char **p = parts; *p; p++) {
        unsigned long a, b;
        char *end;

        if (!**p) {
            continue;
        }
        a = strtoul(*p, &end, 10);
        b = a;
        if (*end == '-') {
            b = strtoul(end + 1, &end, 10);
        }
        if (*end || b < a || b >= HK_MAX_VCPUS || end == *p) {
            error_setg(errp, "hyperkernel: bad vcpus list '%s' (use e.g. 0, 0-1 or 0;2-3)", s);
            return false;
        }
        for (unsigned long i = a; i <= b; i++) {
            *mask |= 1ull << i;
        }
    }
    return true;
}

static bool hk_parse_peers(HyperkernelState *s, Error **errp)
{
    s->peer_addr = g_new0(char *, s->max_nodes + 1);
    if (s->peers) {
        g_auto(GStrv) p = g_strsplit(s->peers, ";", -1);

        if (g_strv_length(p) != s->max_nodes) {
            error_setg(errp, "hyperkernel: peers lists %u addresses, max-nodes=%u "
                       "(list every node slot, own included, separated by ';')",
                       g_strv_length(p), s->max_nodes);
            return false;
        }
        for (int i = 0; i < (int)s->max_nodes; i++) {
            s->peer_addr[i] = g_strdup(p[i]);
        }
    } else if (s->max_nodes > 1) {
        error_setg(errp, "hyperkernel: peers= is required with nodes > 1");
        return false;
    }
    if (s->listen) {
        g_free(s->peer_addr[s->node]);
        s->peer_addr[s->node] = g_strdup(s->listen);
    }
    for (int i = 0; i < (int)s->max_nodes; i++) {
        if (!s->peer_addr[i]) {
            s->peer_addr[i] = g_strdup_printf("unix:/tmp/hk-unused-%d-%d", getpid(), i);
        }
    }
    return true;
}

static void hk_complete(UserCreatable *uc, Error **errp)
{
    HyperkernelState *s = HYPERKERNEL(uc);
    struct hk_config cfg;
    g_autofree char *secret = NULL;
    int r;

    if (hks) {
        error_setg(errp, "only one hyperkernel object is allowed");
        return;
    }
    if (s->nodes < 1 || s->nodes > HK_MAX_NODES) {
        error_setg(errp, "hyperkernel: nodes must be 1..%d", HK_MAX_NODES);
        return;
    }
    if (!s->max_nodes) {
        s->max_nodes = s->nodes;
    }
    if (s->max_nodes < s->nodes || s->max_nodes > HK_MAX_NODES) {
        error_setg(errp, "hyperkernel: max-nodes=%u must be nodes=%u..%d", s->max_nodes,
                   s->nodes, HK_MAX_NODES);
        return;
    }
    if (!s->join && s->node >= s->nodes) {
        error_setg(errp, "hyperkernel: node %u out of range (nodes=%u; a node that joins "
                   "a running cluster takes a slot up to max-nodes with join=on)",
                   s->node, s->nodes);
        return;
    }
    if (s->join && (s->node < s->nodes || s->node >= s->max_nodes)) {
        error_setg(errp, "hyperkernel: join=on takes a slot %u..%u (nodes..max-nodes-1), "
                   "not node %u", s->nodes, s->max_nodes - 1, s->node);
        return;
    }
    if (!hk_parse_vcpus(s->vcpus, &s->local_mask, errp)) {
        return;
    }
    if (s->join && s->local_mask) {
        error_setg(errp, "hyperkernel: a node that joins starts no vCPU (vcpus= must be "
                   "empty): vCPUs move to it once it is in");
        return;
    }
    if (s->policy && !hk_policy_known(s->policy)) {
        error_setg(errp, "hyperkernel: unknown policy '%s': use one of %s", s->policy,
                   hk_policy_names());
        return;
    }
    if (!hk_parse_peers(s, errp)) {
        return;
    }
    if (!s->secret_id) {
        error_setg(errp, "hyperkernel: secret= (id of a secret object) is required");
        return;
    }
    secret = qcrypto_secret_lookup_as_utf8(s->secret_id, errp);
    if (!secret) {
        return;
    }

    hk_config_init(&cfg);
    cfg.node_id = s->node;
    cfg.node_count = s->max_nodes;
    cfg.initial_nodes = s->nodes;
    cfg.join = s->join;
    cfg.peers = (const char *const *)s->peer_addr;
    cfg.secret = secret;
    cfg.budget_bytes = s->budget;
    cfg.policy = s->policy ? s->policy : "page";
    /* our vCPU threads spin in guest code on the same host CPUs */
    cfg.event_realtime = true;
    /* vCPU 0 alone receives the legacy PIC's interrupts (node 0 has the
     * devices): no policy moves it, nor swaps it out */
    cfg.fixed_vcpus = 1;
    cfg.cb.opaque = s;
    cfg.cb.on_stall = hk_cb_stall;
    cfg.cb.on_page_arrived = hk_cb_page_arrived;
    cfg.cb.on_page_left = hk_cb_page_left;
    cfg.cb.on_write_wake = hk_cb_write_wake;
    cfg.cb.on_peer_lost = hk_cb_peer_lost;
    cfg.cb.on_vcpu_receive = hk_cb_vcpu_receive;
    cfg.cb.on_irq = hk_cb_irq;
    cfg.cb.on_apic_addr = hk_cb_apic_addr;
    cfg.cb.on_eoi = hk_cb_eoi;
    cfg.cb.on_shutdown = hk_cb_shutdown;
    cfg.cb.on_migrate_request = hk_cb_migrate_request;
    cfg.cb.guest_thread = hk_cb_guest_thread;
    cfg.cb.on_evacuation = hk_cb_evacuation;
    cfg.cb.on_peer_joined = hk_cb_peer_joined;
    r = hk_node_new(&cfg, &s->hk);
    if (r < 0) {
        error_setg(errp, "hyperkernel: cannot create node %u: %s", s->node, strerror(-r));
        return;
    }

    for (int k = 0; k < HK_MAX_VCPUS; k++) {
        s->export_to[k] = -1;
    }
    if (!hk_pause_init(errp)) {
        return;
    }
    hks = s;
    hk_util_init();
    hk_evacuation_init();
    hk_enabled = true;
    hk_vcpu_thread_init_hook = hk_vcpu_thread_init;
    /* kvmvapic patches guest code and writes guest RAM from every node */
    object_register_sugar_prop(TYPE_APIC_COMMON, "vapic", "off", false);
    s->init_done.notify = hk_machine_init_done;
    qemu_add_machine_init_done_notifier(&s->init_done);
    s->shutdown.notify = hk_shutdown_notify;
    qemu_register_shutdown_notifier(&s->shutdown);
    atexit(hk_atexit);
}

static bool hk_can_be_deleted(UserCreatable *uc)
{
    return false;
}

#define HK_STR_PROP(field)                                                 \
    static char *hk_get_##field(Object *o, Error **e)                      \
    {                                                                      \
        return g_strdup(HYPERKERNEL(o)->field);                            \
    }                                                                      \
    static void hk_set_##field(Object *o, const char *v, Error **e)        \
    {                                                                      \
        HyperkernelState *s = HYPERKERNEL(o);                              \
        g_free(s->field);                                                  \
        s->field = g_strdup(v);                                            \
    }

HK_STR_PROP(listen)
HK_STR_PROP(peers)
HK_STR_PROP(secret_id)
HK_STR_PROP(vcpus)
HK_STR_PROP(policy)

static void hk_get_u32(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    visit_type_uint32(v, name, opaque, errp);
}

static void hk_set_u32(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    visit_type_uint32(v, name, opaque, errp);
}

static void hk_get_budget(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    visit_type_size(v, name, &HYPERKERNEL(o)->budget, errp);
}

static void hk_set_budget(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    visit_type_size(v, name, &HYPERKERNEL(o)->budget, errp);
}

static void hk_get_epoch(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    visit_type_int64(v, name, &HYPERKERNEL(o)->epoch, errp);
}

static void hk_set_epoch(Object *o, Visitor *v, const char *name, void *opaque, Error **errp)
{
    HyperkernelState *s = HYPERKERNEL(o);

    if (visit_type_int64(v, name, &s->epoch, errp)) {
        s->has_epoch = true;
    }
}

static void hk_instance_init(Object *obj)
{
    HyperkernelState *s = HYPERKERNEL(obj);

    object_property_add(obj, "node", "uint32", hk_get_u32, hk_set_u32, NULL, &s->node);
    object_property_add(obj, "nodes", "uint32", hk_get_u32, hk_set_u32, NULL, &s->nodes);
    object_property_add(obj, "max-vcpus", "uint32", hk_get_u32, hk_set_u32, NULL,
                        &s->max_vcpus);
    object_property_add(obj, "max-nodes", "uint32", hk_get_u32, hk_set_u32, NULL,
                        &s->max_nodes);
}

static bool hk_get_join(Object *o, Error **e)
{
    return HYPERKERNEL(o)->join;
}

static void hk_set_join(Object *o, bool v, Error **e)
{
    HYPERKERNEL(o)->join = v;
}

static void hk_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = hk_complete;
    ucc->can_be_deleted = hk_can_be_deleted;
    object_class_property_add_str(oc, "listen", hk_get_listen, hk_set_listen);
    object_class_property_add_str(oc, "peers", hk_get_peers, hk_set_peers);
    object_class_property_add_str(oc, "secret", hk_get_secret_id, hk_set_secret_id);
    object_class_property_add_str(oc, "vcpus", hk_get_vcpus, hk_set_vcpus);
    object_class_property_add_str(oc, "policy", hk_get_policy, hk_set_policy);
    object_class_property_add(oc, "budget", "size", hk_get_budget, hk_set_budget,
                              NULL, NULL);
    object_class_property_add(oc, "epoch", "int", hk_get_epoch, hk_set_epoch,
                              NULL, NULL);
    object_class_property_add_bool(oc, "join", hk_get_join, hk_set_join);
}

static const TypeInfo hk_info = {
    .name = TYPE_HYPERKERNEL,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(HyperkernelState),
    .instance_init = hk_instance_init,
    .class_init = hk_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { }
    },
};

static void hk_register_types(void)
{
    type_register_static(&hk_info);
}

type_init(hk_register_types)
