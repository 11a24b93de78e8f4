/*
 * Software-defined server glue: a vCPU that spins gives way.
 *
 * A guest thread that waits for another in a PAUSE loop (a spinlock, a
 * flag) holds its host CPU until its time slice ends.  When the thread it
 * waits for runs on another vCPU of the same host CPU, as two vCPUs of a
 * node on one CPU do, every hand-off then waits for a time slice:
 * milliseconds, where the guest's own pingpong hands off in a microsecond
 * on separate CPUs.  Hardware has the same problem and the same answer,
 * pause-loop exiting: the hypervisor gives the CPU to someone else.  Under
 * TCG every PAUSE already leaves the translated code (helper_pause), so
 * the vCPU thread yields its host CPU there; with nothing else runnable on
 * it, sched_yield returns at once.  It yields only while another vCPU of
 * this node runs, and only after a run of HK_PAUSE_YIELD PAUSEs in a row,
 * like the hardware's pause-loop window, so that a short spin (a kernel
 * spinlock held for a moment) does not yield.  0 turns it off.
 *
 * The same run tells the library a vCPU spins (hk_vcpu_spinning): under
 * HK_EVENT_SCHED=auto (opt-in) its event thread then runs SCHED_FIFO, so
 * that the message the spinner waits for preempts it, and otherwise stays in
 * the normal class, where it does not preempt a vCPU doing useful work.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "hw/core/cpu.h"
#include "system/hk-hooks.h"
#include "internal.h"

#include <sched.h>

/* PAUSEs further apart than this are not one spin */
#define HK_PAUSE_GAP_NS 50000
#define HK_PAUSE_WINDOW_DEFAULT 8

static unsigned hk_pause_window;

/*
 * Only for a vCPU of this node: the thread a spinner waits for on another
 * node reaches it through a page, not a CPU.  Yielding anyway cost a
 * cross-node hand-off dearly: pingpong on 4 nodes (one vCPU each, two
 * nodes per host CPU) went from 119 us to 1.2 ms per hand-off, and the
 * 2-node hand-off of bench stall from about 60 to 85 us.  (Racy reads:
 * a hint; RCU is held, we run inside cpu_exec.)
 */
static bool hk_pause_other_vcpu_runs(CPUState *self)
{
    CPUState *cs;

    CPU_FOREACH(cs) {
        if (cs != self && !qatomic_read(&cs->hk_parked) && !qatomic_read(&cs->halted)) {
            return true;
        }
    }
    return false;
}

/* a vCPU thread, in helper_pause, without the BQL */
static void hk_pause(CPUState *cs)
{
    static __thread int64_t last_ns;
    static __thread unsigned run;
    int64_t now = hk_now();

    if (now - last_ns > HK_PAUSE_GAP_NS) {
        run = 0;
    }
    last_ns = now;
    if (++run >= (hk_pause_window ? hk_pause_window : HK_PAUSE_WINDOW_DEFAULT) && hks) {
        run = 0;
        qatomic_inc(&hks->pause_spins);
        /* HK_EVENT_SCHED=auto: the event thread now preempts us */
        hk_vcpu_spinning(hks->hk);
        if (hk_pause_window && hk_pause_other_vcpu_runs(cs)) {
            qatomic_inc(&hks->pause_yields);
            sched_yield();
        }
    }
}

bool hk_pause_init(Error **errp)
{
    const char *e = getenv("HK_PAUSE_YIELD");
    uint64_t v = HK_PAUSE_WINDOW_DEFAULT;

    if (e && (qemu_strtou64(e, NULL, 10, &v) < 0 || v > 1000000)) {
        error_setg(errp, "HK_PAUSE_YIELD=%s: a vCPU yields its host CPU after this many "
                   "PAUSEs in a row, 1 to 1000000, or 0 to never yield (default %u)",
                   e, HK_PAUSE_WINDOW_DEFAULT);
        return false;
    }
    hk_pause_window = v;
    hk_pause_hook = hk_pause; /* 0: no yield, but spins are still seen */
    return true;
}
