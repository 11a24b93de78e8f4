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
 * HK_DEBUG_TB_DEFER=1 sends every page that leaves down the deferred path
 * (tests/test_translations.py).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "exec/exec-all.h"
#include "internal.h"

#define HK_ACK_HOLD_MAX_NS (50 * 1000 * 1000)
#define HK_TB_RETRY_US 100

/* A page whose translations still have to go. */
typedef struct HkTbWork {
    uint64_t offset;
    uint64_t gen;           /* of the held ack, 0 for an arrival (no ack) */
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

/* Drop the page's translations if no lock is busy; any thread. */
static bool hk_tb_try_invalidate(uint64_t offset)
{
    HkRegion *r = hk_region_of_offset(offset);
    ram_addr_t ra;

    if (!r) {
        return true;
    }
    ra = r->ram_addr + (offset - r->region_off);
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

static void hk_tb_defer(uint64_t offset, uint64_t gen)
{
    HkTbWork *w = g_new(HkTbWork, 1);

    w->offset = offset;
    w->gen = gen;
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
                pending = g_list_delete_link(pending, l);
                g_free(w);
            } else if (w->gen && hk_now() - w->since > HK_ACK_HOLD_MAX_NS) {
                if (hk_tb_release(w->offset, w->gen)) {
                    qatomic_inc(&hks->tbinval_ack_early_timeout);
                }
                w->gen = 0;
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
    hk_tb_defer(offset, 0);
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
    hk_tb_defer(offset, gen);
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

void hk_tb_init(void)
{
    const char *defer = getenv("HK_DEBUG_TB_DEFER");

    hk_tb_always_defer = defer && atoi(defer) > 0;
    qemu_mutex_init(&hk_tb_lock);
    hk_tb_held = g_hash_table_new(g_direct_hash, g_direct_equal);
    hk_tb_queue = g_async_queue_new();
    qemu_thread_create(&hk_tb_thread, "hk-tbinval", hk_tb_thread_fn, NULL,
                       QEMU_THREAD_DETACHED);
}
