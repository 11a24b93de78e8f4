/*
 * Software-defined server glue: drop the translations of a page that moves.
 *
 * A page that left may be rewritten by its new owner, and a page that arrived
 * may differ from the copy this node translated before, so both drop the
 * page's translation blocks.  The library's event thread calls us, and it
 * also resolves the vCPUs' faults: a translating vCPU that holds TB page locks
 * can be waiting for it.  So the event thread only try-locks
 * (tb_invalidate_phys_range_try); when that fails, the hk-tbinval thread,
 * which may block, does the invalidation.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "exec/exec-all.h"
#include "internal.h"

static __thread bool hk_rcu_registered;

static void hk_tb_invalidate(uint64_t offset)
{
    HkRegion *r = hk_region_of_offset(offset);
    ram_addr_t ra;

    if (!r) {
        return;
    }
    ra = r->ram_addr + (offset - r->region_off);
    if (!hk_rcu_registered) {
        rcu_register_thread();
        hk_rcu_registered = true;
    }
    WITH_RCU_READ_LOCK_GUARD() {
        if (tb_invalidate_phys_range_try(ra, ra + HK_PAGE_SIZE - 1)) {
            qatomic_inc(&hks->tbinval_try_ok);
            return;
        }
    }
    qatomic_inc(&hks->tbinval_deferred);
    g_async_queue_push(hks->tbinval_queue, (gpointer)(uintptr_t)(ra + 1));
}

static void *hk_tbinval_thread(void *opaque)
{
    rcu_register_thread();
    for (;;) {
        uintptr_t v = (uintptr_t)g_async_queue_pop(hks->tbinval_queue);
        ram_addr_t ra = v - 1;

        WITH_RCU_READ_LOCK_GUARD() {
            tb_invalidate_phys_range(ra, ra + HK_PAGE_SIZE - 1);
        }
    }
    return NULL;
}

void hk_cb_page_arrived(void *opaque, uint64_t offset)
{
    hk_tb_invalidate(offset);
}

void hk_cb_page_left(void *opaque, uint64_t offset)
{
    hk_tb_invalidate(offset);
}

void hk_tb_init(void)
{
    hks->tbinval_queue = g_async_queue_new();
    qemu_thread_create(&hks->tbinval_thread, "hk-tbinval", hk_tbinval_thread,
                       NULL, QEMU_THREAD_DETACHED);
}
