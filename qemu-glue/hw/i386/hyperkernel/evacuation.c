/*
 * Software-defined server glue: evacuation and health telemetry.
 *
 * hyperkernel-evacuate (or a health threshold the library sees passed)
 * moves everything off this node while the guest runs on the others: its
 * vCPUs (the library asks for each move through on_migrate_request), its
 * pages and its share of the directory (the library alone).  Each step is a
 * HYPERKERNEL_EVACUATION event.  At the end this process exits with status
 * 0 and without stopping the guest: the others saw it say BYE.
 *
 * Node 0 cannot leave: it owns the devices (the disk, the console, the
 * timers and the legacy PIC that vCPU 0 alone receives).  Moving device
 * ownership is not built; the request is refused.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-hyperkernel.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "system/runstate.h"
#include "internal.h"

static const char *hk_evac_phase_name(enum hk_evac_phase p)
{
    switch (p) {
    case HK_EVAC_VCPUS:   return "vcpus";
    case HK_EVAC_PAGES:   return "pages";
    case HK_EVAC_FREEZE:  return "freeze";
    case HK_EVAC_DRAIN:   return "drain";
    case HK_EVAC_DONE:    return "done";
    case HK_EVAC_REFUSED: return "refused";
    default:              return "none";
    }
}

static void hk_evac_event(const struct hk_evac_status *st)
{
    uint64_t end = st->finished_ns ? st->finished_ns : (uint64_t)hk_now();

    qapi_event_send_hyperkernel_evacuation(st->node, hk_evac_phase_name(st->phase),
                                           st->reason, st->vcpus_moved, st->pages_pushed,
                                           st->copies_dropped, st->zero_pages,
                                           st->homes_moved, st->bytes, st->pages_left,
                                           end - st->started_ns);
}

/* seconds from the start of one phase to the start of another */
static double hk_evac_span(const struct hk_evac_status *st, int from, int to)
{
    return st->phase_ns[from] && st->phase_ns[to] > st->phase_ns[from] ?
           (st->phase_ns[to] - st->phase_ns[from]) / 1e9 : 0.0;
}

/* main loop: the event, and at the end the exit */
static void hk_evac_bh(void *opaque)
{
    struct hk_evac_status *st = opaque;

    hk_evac_event(st);
    if (st->phase == HK_EVAC_DONE) {
        /* One line the testbed reads from the log after the exit. */
        fprintf(stderr, "qemu-system-x86_64: hyperkernel node %u: evacuated (%s): "
                "{\"node\": %d, \"vcpus\": %u, \"pages_pushed\": %" PRIu64
                ", \"copies_dropped\": %" PRIu64 ", \"zero_pages\": %" PRIu64
                ", \"homes_moved\": %" PRIu64 ", \"bytes\": %" PRIu64
                ", \"pages_left\": %" PRIu64 ", \"seconds\": %.3f"
                ", \"vcpus_s\": %.3f, \"pages_s\": %.3f, \"directory_s\": %.3f}\n",
                hks->node, st->reason, st->node, st->vcpus_moved, st->pages_pushed,
                st->copies_dropped, st->zero_pages, st->homes_moved, st->bytes,
                st->pages_left, (st->finished_ns - st->started_ns) / 1e9,
                hk_evac_span(st, HK_EVAC_VCPUS, HK_EVAC_PAGES),
                hk_evac_span(st, HK_EVAC_PAGES, HK_EVAC_FREEZE),
                hk_evac_span(st, HK_EVAC_FREEZE, HK_EVAC_DONE));
        fflush(stderr);
        hks->evacuated = true;
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_QMP_QUIT);
    }
    g_free(st);
}

/* library callback, event thread */
void hk_cb_evacuation(void *opaque, const struct hk_evac_status *st)
{
    hk_run_in_main_loop(hk_evac_bh, g_memdup2(st, sizeof(*st)));
}

void qmp_hyperkernel_evacuate(Error **errp)
{
    char why[256] = "";
    int r;

    if (!hks || !hks->started) {
        error_setg(errp, "hyperkernel is not running");
        return;
    }
    if (hk_is_io_node()) {
        error_setg(errp, "node 0 owns the devices (disk, console, timers, the PIC's "
                   "vCPU 0) and cannot leave; evacuate another node");
        return;
    }
    r = hk_evacuate(hks->hk, "operator", why, sizeof(why));
    if (r < 0) {
        error_setg(errp, "node %u cannot evacuate: %s", hks->node, why);
    }
}

void qmp_hyperkernel_inject_health(bool has_corrected_errors, int64_t corrected_errors,
                                   bool has_temperature, int64_t temperature,
                                   bool has_link_errors, int64_t link_errors,
                                   Error **errp)
{
    struct hk_health h, now;
    uint32_t score;
    char why[160] = "";

    if (!hks || !hks->started) {
        error_setg(errp, "hyperkernel is not running");
        return;
    }
    if ((has_corrected_errors && corrected_errors < 0) ||
        (has_link_errors && link_errors < 0)) {
        error_setg(errp, "error counts cannot be negative");
        return;
    }
    if (has_temperature && (temperature < -60 || temperature > 200)) {
        error_setg(errp, "temperature %" PRId64 " C is out of range: use -60 to 200",
                   temperature);
        return;
    }
    /* what is not given stays as injected before */
    hk_health_get(hks->hk, &now, &score);
    h = hks->injected_health;
    if (has_corrected_errors) {
        h.corrected_errors = corrected_errors;
    }
    if (has_temperature) {
        h.temp_c = temperature;
    }
    if (has_link_errors) {
        h.link_errors = link_errors;
    }
    if (hk_health_inject(hks->hk, &h, why, sizeof(why)) < 0) {
        error_setg(errp, "%s", why);
        return;
    }
    hks->injected_health = h;
}

void hk_evacuation_init(void)
{
    hks->injected_health.temp_c = INT32_MIN;
}
