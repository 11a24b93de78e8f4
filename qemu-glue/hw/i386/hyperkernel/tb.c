/*
 * Software-defined server glue: drop the translations of a page that moves.
 *
 * A page that left may be rewritten by its new owner, and a page that arrived
 * may differ from the copy this node translated before, so both drop the
 * page's translation blocks.  The library acknowledges a page that left
 * (INV_ACK / XFER_DROPPED) only once we say its translations are gone: after
 * that, the new owner may write it and this node must not run its old code.
 *
 * The library's event thread calls us, and it also resolves the vCPUs'
 * faults, so it must never wait for a TB page lock: a translating vCPU holds
 * one while it reads guest code, and may be waiting for the event thread.  So
 * the event thread only try-locks (tb_invalidate_phys_range_try).  When that
 * fails, on_page_left returns HK_DEFER (the library holds the ack) and the
 * hk-tbinval thread retries until it succeeds, then releases the ack.
 *
 * One wait cannot end that way.  A vCPU translating code of the page holds
 * its lock; the page is dropped under it; the vCPU's next read of the page
 * faults, and that fault is served only after the new owner's transaction,
 * which waits for our ack.  The lock, and so the invalidation, waits for the
 * fault.  When a thread of this node stalls on a page whose ack we hold
 * (on_stall) and the lock is still busy, or an ack has been held for
 * HK_ACK_HOLD_MAX_NS, the ack goes out first and the invalidation follows as
 * soon as the lock is free; both cases are counted (tb-ack-early-*).  The
 * translation that held the lock finishes with the new contents for the
 * bytes it had not read yet.
 *
 * A store that waits for its page widens a race QEMU itself keeps narrow.
 * The store passed its TLB check (and notdirty_write dropped the page's
 * translations) before it faulted; while it waits (a write-protect fault for
 * an upgrade, or a missing page), another vCPU of this node may translate the
 * page from its old bytes and protect it again, and the store then lands
 * without passing notdirty_write: that translation stays stale for as long as
 * the page stays here.  In the guest this was a kernel text_poke (a static key
 * flipped during boot): the writer's vCPU restored an int3's first byte while
 * CPU 0 translated the old int3, and CPU 0 then trapped on it forever (the
 * kprobe handler backs up over an int3 that memory no longer holds), inside
 * an interrupt handler, so the writer's next IPI never completed: an RCU
 * stall.  The smc workload's race=1 mode catches it.
 *
 * So while a vCPU's store waits for a page (from on_stall until the store
 * has landed), the page's code is not cached (patch 0012: it runs from
 * temporary TBs), and its translations are dropped when the wait begins
 * (those made since notdirty_write), again before the store may land (the
 * library asks on_write_wake before it wakes the writer; if a lock is busy
 * the hk-tbinval thread wakes it once they are gone), and once more after
 * the store, waiting for the page's lock so that a translation begun from
 * the old bytes has ended unkept (work queued on the vCPU, which runs once
 * the vCPU is back in its loop; it then clears the mark).  The same race
 * without a userfault, a store landing while another vCPU translates the
 * page, is QEMU's own: patch 0013 closes it.
 *
 * HK_DEBUG_TB_DEFER=1 sends every page that leaves down the deferred path
 * (tests/test_translations.py).  HK_DEBUG_CODE_CACHED_UNDER_STORE=1 turns the
 * store-wait handling off, to show that smc race=1 catches its absence.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "exec/exec-all.h"
#include "exec/ram_addr.h"
#include "system/hk-hooks.h"
#include "internal.h"

#define HK_ACK_HOLD_MAX_NS (50 * 1000 * 1000)
#define HK_TB_RETRY_US 100

/* A page whose translations still have to go. */
typedef struct HkTbWork {
    uint64_t offset;
    uint64_t gen;           /* of the held ack, 0 for an arrival (no ack) */
    bool wake;              /* stores wait for it to resume (on_write_wake) */
    bool slow;              /* the wake waited longer than HK_ACK_HOLD_MAX_NS */
    int64_t since;
} HkTbWork;

static QemuThread hk_tb_thread;
static GAsyncQueue *hk_tb_queue;
/* page -> generation of the ack held for it */
static QemuMutex hk_tb_lock;
static GHashTable *hk_tb_held;
static uint64_t hk_tb_gen;
static __thread bool hk_rcu_registered;
/* HK_DEBUG_TB_DEFER=1: hold every ack for the thread (tests the deferred path) */
static bool hk_tb_always_defer;

static gpointer hk_tb_key(uint64_t offset)
{
    return (gpointer)(uintptr_t)(offset / HK_PAGE_SIZE + 1);
}

static bool hk_tb_ram_addr(uint64_t offset, ram_addr_t *ra)
{
    HkRegion *r = hk_region_of_offset(offset);

    if (!r) {
        return false;
    }
    *ra = r->ram_addr + (offset - r->region_off);
    return true;
}

/* Drop the page's translations if no lock is busy; any thread. */
static bool hk_tb_try_invalidate(uint64_t offset)
{
    ram_addr_t ra;

    if (!hk_tb_ram_addr(offset, &ra)) {
        return true;
    }
    if (!hk_rcu_registered) {
        rcu_register_thread();
        hk_rcu_registered = true;
    }
    WITH_RCU_READ_LOCK_GUARD() {
        return tb_invalidate_phys_range_try(ra, ra + HK_PAGE_SIZE - 1);
    }
    g_assert_not_reached();
}

/* Release the held ack of the page; gen 0: whichever is held. */
static bool hk_tb_release(uint64_t offset, uint64_t gen)
{
    gpointer held;
    bool release;

    qemu_mutex_lock(&hk_tb_lock);
    release = g_hash_table_lookup_extended(hk_tb_held, hk_tb_key(offset), NULL, &held) &&
              (!gen || (uintptr_t)held == gen);
    if (release) {
        g_hash_table_remove(hk_tb_held, hk_tb_key(offset));
    }
    qemu_mutex_unlock(&hk_tb_lock);
    if (release) {
        hk_page_left_done(hks->hk, offset);
        qatomic_inc(&hks->tbinval_acks_released);
    }
    return release;
}

static void hk_tb_defer(uint64_t offset, uint64_t gen, bool wake)
{
    HkTbWork *w = g_new(HkTbWork, 1);

    w->offset = offset;
    w->gen = gen;
    w->wake = wake;
    w->slow = false;
    w->since = hk_now();
    g_async_queue_push(hk_tb_queue, w);
}


/*
 * Works on every deferred page at once, so one page whose lock stays busy
 * does not hold back the others' acks.
 */
static void *hk_tb_thread_fn(void *opaque)
{
    GList *pending = NULL;

    for (;;) {
        HkTbWork *w = pending ? g_async_queue_try_pop(hk_tb_queue)
                              : g_async_queue_pop(hk_tb_queue);

        for (; w; w = g_async_queue_try_pop(hk_tb_queue)) {
            pending = g_list_append(pending, w);
        }
        for (GList *l = pending, *next; l; l = next) {
            w = l->data;
            next = l->next;
            if (hk_tb_try_invalidate(w->offset)) {
                if (w->gen) {
                    hk_tb_release(w->offset, w->gen);
                }
                if (w->wake) {
                    hk_page_wake(hks->hk, w->offset);
                }
                pending = g_list_delete_link(pending, l);
                g_free(w);
            } else if (hk_now() - w->since > HK_ACK_HOLD_MAX_NS) {
                if (w->gen && hk_tb_release(w->offset, w->gen)) {
                    qatomic_inc(&hks->tbinval_ack_early_timeout);
                }
                w->gen = 0;
                /*
                 * A wake is never given up: the lock's holder translates,
                 * and a translation waits for nothing the stalled store
                 * holds (it may fault on another page, which the event
                 * thread serves).  Counted, so that a long one shows.
                 */
                if (w->wake && !w->slow) {
                    w->slow = true;
                    qatomic_inc(&hks->tbinval_wake_slow);
                }
            }
        }
        if (pending) {
            g_usleep(HK_TB_RETRY_US);
        }
    }
    return NULL;
}

void hk_cb_page_arrived(void *opaque, uint64_t offset)
{
    if (hk_tb_try_invalidate(offset)) {
        qatomic_inc(&hks->tbinval_try_ok);
        return;
    }
    qatomic_inc(&hks->tbinval_arrival_deferred);
    hk_tb_defer(offset, 0, false);
}

int hk_cb_page_left(void *opaque, uint64_t offset)
{
    uint64_t gen;

    if (!hk_tb_always_defer && hk_tb_try_invalidate(offset)) {
        qatomic_inc(&hks->tbinval_try_ok);
        return 0;
    }
    qemu_mutex_lock(&hk_tb_lock);
    gen = ++hk_tb_gen;
    g_hash_table_insert(hk_tb_held, hk_tb_key(offset), (gpointer)(uintptr_t)gen);
    qemu_mutex_unlock(&hk_tb_lock);
    qatomic_inc(&hks->tbinval_deferred);
    hk_tb_defer(offset, gen, false);
    return HK_DEFER;
}

/*
 * Event thread, on_stall: a thread of ours waits for this page.  If its ack
 * is held and the lock is still busy, the holder may well be that thread:
 * release the ack now rather than deadlock.
 */
void hk_tb_page_stalled(uint64_t offset)
{
    bool held;

    qemu_mutex_lock(&hk_tb_lock);
    held = g_hash_table_contains(hk_tb_held, hk_tb_key(offset));
    qemu_mutex_unlock(&hk_tb_lock);
    if (!held) {
        return;
    }
    if (hk_tb_try_invalidate(offset)) {
        hk_tb_release(offset, 0);
    } else if (hk_tb_release(offset, 0)) {
        qatomic_inc(&hks->tbinval_ack_early_stall);
    }
}

/* The page (ram_addr) each vCPU's stalled store waits for, or -1. */
static uint64_t hk_store_waits[HK_MAX_VCPUS];
static int hk_store_waiting;            /* how many are set */

static bool hk_code_uncached(uint64_t ram_addr)
{
    uint64_t page = ram_addr & TARGET_PAGE_MASK;

    if (!qatomic_read(&hk_store_waiting)) {
        return false;
    }
    for (int k = 0; k < HK_MAX_VCPUS; k++) {
        if (qatomic_read(&hk_store_waits[k]) == page) {
            return true;
        }
    }
    return false;
}

/*
 * The vCPU's thread, BQL held, back in its loop: its store has landed (or
 * the vCPU was pulled out before it did).  Code-dirty clear means the page
 * was translated and protected again since notdirty_write.  The invalidation
 * runs either way, before the mark goes: it waits for the page's lock, so a
 * translation that began before the mark (from the old bytes) has ended, and
 * seen the mark, and was not kept.  Clearing the mark first would let it be.
 */
static void hk_tb_after_store_work(CPUState *cs, run_on_cpu_data d)
{
    uint64_t page = d.host_ulong;
    int k = cs->cpu_index;

    if (!cpu_physical_memory_get_dirty_flag(page, DIRTY_MEMORY_CODE)) {
        qatomic_inc(&hks->tbinval_after_store);
    }
    tb_invalidate_phys_range(page, page + HK_PAGE_SIZE - 1);
    if (qatomic_cmpxchg(&hk_store_waits[k], page, (uint64_t)-1) == page) {
        qatomic_dec(&hk_store_waiting);
    }
}

/*
 * Event thread: stores that waited for the page may land now.  Translations
 * made from its old bytes between the stores' TLB checks and the mark
 * (hk_tb_write_stalled) must be gone first: once a store lands, its vCPU runs
 * on, and may publish what it wrote before its queued after-store work runs.
 */
int hk_cb_write_wake(void *opaque, uint64_t offset)
{
    ram_addr_t page;

    if (!hk_code_uncached_hook || !hk_tb_ram_addr(offset, &page) ||
        !hk_code_uncached(page & TARGET_PAGE_MASK)) {
        return 0;
    }
    if (hk_tb_try_invalidate(offset)) {
        return 0;
    }
    qatomic_inc(&hks->tbinval_wake_deferred);
    hk_tb_defer(offset, 0, true);
    return HK_DEFER;
}

/* Event thread, on_stall: vCPU k's store waits for the page. */
void hk_tb_write_stalled(int k, uint64_t offset)
{
    CPUState *cs = qemu_get_cpu(k);
    ram_addr_t page;

    if (!hk_code_uncached_hook || !cs || k >= HK_MAX_VCPUS || !hk_tb_ram_addr(offset, &page)) {
        return;
    }
    page &= TARGET_PAGE_MASK;
    /* one stall per vCPU at a time; a newer one replaces an older mark */
    if (qatomic_xchg(&hk_store_waits[k], page) == (uint64_t)-1) {
        qatomic_inc(&hk_store_waiting);
    }
    smp_mb();   /* the mark before the drop: a translation after it sees it */
    if (!hk_tb_try_invalidate(offset)) {
        hk_tb_defer(offset, 0, false);
    }
    async_run_on_cpu(cs, hk_tb_after_store_work, RUN_ON_CPU_HOST_ULONG(page));
}

void hk_tb_init(void)
{
    const char *defer = getenv("HK_DEBUG_TB_DEFER");
    const char *broken = getenv("HK_DEBUG_CODE_CACHED_UNDER_STORE");

    hk_tb_always_defer = defer && atoi(defer) > 0;
    for (int k = 0; k < HK_MAX_VCPUS; k++) {
        hk_store_waits[k] = -1;
    }
    if (!(broken && atoi(broken) > 0)) {
        hk_code_uncached_hook = hk_code_uncached;
    }
    qemu_mutex_init(&hk_tb_lock);
    hk_tb_held = g_hash_table_new(g_direct_hash, g_direct_equal);
    hk_tb_queue = g_async_queue_new();
    qemu_thread_create(&hk_tb_thread, "hk-tbinval", hk_tb_thread_fn, NULL,
                       QEMU_THREAD_DETACHED);
}
