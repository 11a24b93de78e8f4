/*
 * Software-defined server glue: a vCPU's state, and moving it between nodes.
 *
 * The state is the common CPU part (without the tb_flush of
 * vmstate_cpu_common), the x86 CPU and its LAPIC, written through vmstate
 * into a buffer.  Export and import both run in the vCPU's own thread with
 * the BQL held, outside cpu_exec, so the state is architectural.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "exec/cputlb.h"
#include "hw/i386/apic_internal.h"
#include "io/channel-buffer.h"
#include "migration/qemu-file.h"
#include "migration/vmstate.h"
#include "system/runstate.h"
#include "target/i386/cpu.h"
#include "internal.h"

#define HK_BLOB_MAGIC 0x484b5632u      /* "HKV2": reason, stamp, clock, vmstates */

static int hk_cpu_lite_post_load(void *opaque, int version_id)
{
    CPUState *cpu = opaque;

    /* 0x01 used to be CPU_INTERRUPT_EXIT; see cpu_common_post_load */
    cpu->interrupt_request &= ~0x01;
    tlb_flush(cpu);
    return 0;
}

/* vmstate_cpu_common without its tb_flush (which would drop the node's TBs) */
static const VMStateDescription hk_vmstate_cpu_lite = {
    .name = "hk-cpu-common",
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = hk_cpu_lite_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(halted, CPUState),
        VMSTATE_UINT32(interrupt_request, CPUState),
        VMSTATE_INT32(exception_index, CPUState),
        VMSTATE_END_OF_LIST()
    }
};

/*
 * The blob: magic, why the vCPU moves, the export time (latency), the
 * exporter's guest clock, then the three vmstates.  The library carries the
 * vCPU's move count and home node beside it.
 */
static int hk_cpu_save(CPUState *cs, HyperkernelMoveReason why, int64_t stamp,
                       void **out, size_t *len)
{
    X86CPU *cpu = X86_CPU(cs);
    QIOChannelBuffer *bioc = qio_channel_buffer_new(4096);
    QEMUFile *f = qemu_file_new_output(QIO_CHANNEL(bioc));
    int ret;

    qemu_put_be32(f, HK_BLOB_MAGIC);
    qemu_put_be32(f, why);
    qemu_put_be64(f, stamp);
    qemu_put_be64(f, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
    ret = vmstate_save_state(f, &hk_vmstate_cpu_lite, cs, NULL);
    ret = ret ?: vmstate_save_state(f, &vmstate_x86_cpu, cpu, NULL);
    ret = ret ?: vmstate_save_state(f, &vmstate_apic_common, cpu->apic_state, NULL);
    qemu_fflush(f);
    ret = ret ?: qemu_file_get_error(f);
    *len = bioc->usage;
    *out = g_memdup2(bioc->data, bioc->usage);
    qemu_fclose(f);
    return ret;
}

static int hk_cpu_load(CPUState *cs, const void *blob, size_t len,
                       HyperkernelMoveReason *why, int64_t *stamp)
{
    X86CPU *cpu = X86_CPU(cs);
    QIOChannelBuffer *bioc = qio_channel_buffer_new(len);
    QEMUFile *f;
    uint32_t reason;
    int64_t vclock;
    int ret;

    memcpy(bioc->data, blob, len);
    bioc->usage = len;
    f = qemu_file_new_input(QIO_CHANNEL(bioc));
    if (qemu_get_be32(f) != HK_BLOB_MAGIC) {
        qemu_fclose(f);
        return -EINVAL;
    }
    reason = qemu_get_be32(f);
    *stamp = qemu_get_be64(f);
    if (reason >= HYPERKERNEL_MOVE_REASON__MAX) {
        qemu_fclose(f);
        return -EINVAL;
    }
    *why = reason;
    vclock = qemu_get_be64(f);
    /*
     * Never let the vCPU see time go backwards: wait for our virtual clock to
     * reach the sender's (one host: microseconds at most).  Only while the VM
     * runs: a stopped VM's virtual clock stands still, and this runs with the
     * BQL held, so waiting then stopped the main loop for good.  (A node hung
     * at exit this way: a vCPU arrived as the guest powered off, after
     * vm_shutdown had stopped the clock; its stacks showed this loop and the
     * main thread's exit notifiers waiting for the BQL.)  Bounded as well.
     */
    int64_t give_up = get_clock() + 100 * SCALE_MS;
    while (runstate_is_running() && qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) < vclock &&
           get_clock() < give_up) {
        g_usleep(10);
    }
    ret = vmstate_load_state(f, &hk_vmstate_cpu_lite, cs, 1);
    ret = ret ?: vmstate_load_state(f, &vmstate_x86_cpu, cpu,
                                    vmstate_x86_cpu.version_id);
    ret = ret ?: vmstate_load_state(f, &vmstate_apic_common, cpu->apic_state,
                                    vmstate_apic_common.version_id);
    qemu_fclose(f);
    return ret;
}

/*
 * vCPU thread, BQL held, outside cpu_exec.  hk_vcpu_send also moves the
 * vCPU in the library's location directory and carries its home node.
 */
void hk_vcpu_export(CPUState *cs, int target, HyperkernelMoveReason why)
{
    X86CPU *cpu = X86_CPU(cs);
    APICCommonState *apic = APIC_COMMON(cpu->apic_state);
    g_autofree void *blob = NULL;
    size_t len;
    int k = cs->cpu_index;
    int r;

    if (cs->hk_parked || target == (int)hks->node || target < 0 ||
        target >= (int)hks->max_nodes) {
        return;
    }
    if (hk_cpu_save(cs, why, hk_now(), &blob, &len) < 0) {
        error_report("hyperkernel: cannot save the state of vCPU %d", k);
        return;
    }
    cs->hk_parked = true;
    timer_del(apic->timer);     /* its timer must not fire here any more */
    r = hk_vcpu_send(hks->hk, target, k, blob, len);
    if (r < 0) {
        HyperkernelMoveReason unused;

        error_report("hyperkernel: sending vCPU %d to node %d failed: %s",
                     k, target, strerror(-r));
        /* keep it: run it here again (the library kept it here too) */
        hk_cpu_load(cs, blob, len, &unused, &(int64_t){0});
        cs->hk_parked = false;
        return;
    }
    qatomic_inc(&hks->mig_out);
    hks->mig_bytes_last = len;
}

typedef struct HkImport {
    int from;
    size_t len;
    uint8_t data[];
} HkImport;

static void hk_vcpu_import_work(CPUState *cs, run_on_cpu_data d)
{
    HkImport *imp = d.host_ptr;
    int k = cs->cpu_index;
    int64_t stamp = 0, lat;
    HyperkernelMoveReason why;

    if (!cs->hk_parked) {
        error_report("hyperkernel: vCPU %d state from node %d arrived, but it "
                     "already runs here; dropped", k, imp->from);
        g_free(imp);
        return;
    }
    if (hk_cpu_load(cs, imp->data, imp->len, &why, &stamp) < 0) {
        /* never run half-loaded state */
        error_report("hyperkernel: cannot load the state of vCPU %d from node %d",
                     k, imp->from);
        g_free(imp);
        qemu_system_vmstop_request_prepare();
        qemu_system_vmstop_request(RUN_STATE_INTERNAL_ERROR);
        return;
    }
    cs->hk_parked = false;
    lat = hk_now() - stamp;
    qatomic_inc(&hks->mig_in);
    hks->mig_bytes_last = imp->len;
    hks->mig_bytes_total += imp->len;
    hks->mig_lat_last = lat;
    hks->mig_lat_total += lat;
    if (lat > hks->mig_lat_max) {
        hks->mig_lat_max = lat;
    }
    hk_moves_vcpu_arrived(k);
    qapi_event_send_hyperkernel_vcpu_migrated(k, imp->from, hks->node,
                                              imp->len, lat,
                                              why);
    g_free(imp);
    qemu_cpu_kick(cs);
}

/*
 * Library callback (event thread): a vCPU's state arrived.  The library has
 * already recorded that the vCPU runs here, so interrupts for it now come
 * here; they are queued behind this import on the vCPU's work list.
 */
void hk_cb_vcpu_receive(void *opaque, int from, uint32_t vcpu,
                        const void *blob, size_t len)
{
    CPUState *cs = qemu_get_cpu(vcpu);
    HkImport *imp;

    if (!cs) {
        warn_report("hyperkernel: state of unknown vCPU %u from node %d", vcpu, from);
        return;
    }
    imp = g_malloc(sizeof(*imp) + len);
    imp->from = from;
    imp->len = len;
    memcpy(imp->data, blob, len);
    hk_run_on_cpu(cs, hk_vcpu_import_work, RUN_ON_CPU_HOST_PTR(imp));
}
