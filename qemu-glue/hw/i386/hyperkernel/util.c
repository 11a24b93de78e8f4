/*
 * Software-defined server glue: clocks, fatal errors, and handing work from
 * the library's event thread to a vCPU thread or to the main loop.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "internal.h"

int64_t hk_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void hk_fatal(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *s = NULL;

    va_start(ap, fmt);
    s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("hyperkernel node %u: %s", hks ? hks->node : 0, s);
    exit(1);
}

/*
 * async_run_on_cpu from a thread without the BQL can lose its wake-up: the
 * vCPU thread checks its (empty) work list under the BQL, then we queue and
 * broadcast halt_cond, then it waits.  A forwarded interrupt would then wait
 * for the vCPU's next timer, and an arriving vCPU (parked, no timer) forever.
 * Kick once more from the main loop, which holds the BQL, so the broadcast
 * cannot fall into that gap.
 */
static void hk_kick_bh(void *opaque)
{
    qemu_cpu_kick(opaque);
}

void hk_run_on_cpu(CPUState *cs, run_on_cpu_func func, run_on_cpu_data d)
{
    async_run_on_cpu(cs, func, d);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), hk_kick_bh, cs);
}

/*
 * Work for the main loop from the event thread.  One-shot bottom halves run
 * newest first, and order matters: a vCPU's LDR write and the clearing write
 * before it, applied in reverse to its parked copies, left other nodes with
 * empty logical destination sets (lost IPIs, a guest stuck in stop_machine).
 * So one queue, drained in order by one bottom half.
 */
typedef struct HkMainWork {
    void (*fn)(void *opaque);
    void *opaque;
} HkMainWork;

static void hk_main_bh(void *opaque)
{
    HkMainWork *w;

    while ((w = g_async_queue_try_pop(hks->main_queue))) {
        w->fn(w->opaque);
        g_free(w);
    }
}

void hk_run_in_main_loop(void (*fn)(void *opaque), void *opaque)
{
    HkMainWork *w = g_new(HkMainWork, 1);

    w->fn = fn;
    w->opaque = opaque;
    g_async_queue_push(hks->main_queue, w);
    qemu_bh_schedule(hks->main_bh);
}

void hk_util_init(void)
{
    hks->main_queue = g_async_queue_new();
    hks->main_bh = qemu_bh_new(hk_main_bh, NULL);
}
