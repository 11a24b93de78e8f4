/*
 * Software-defined server glue: a peer died.
 *
 * The guest cannot go on: the dead node held vCPUs and pages.  Every survivor
 * says which node died, what was lost with it, stops the VM and exits with
 * status 3, also when a vCPU touches a lost page first.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/qapi-events-hyperkernel.h"
#include "qemu/main-loop.h"
#include "system/runstate.h"
#include "internal.h"

#define HK_LOST_EXIT 3

static char hk_lost_msg[1024];
static char hk_sigbus_msg[160];
static size_t hk_sigbus_msg_len;

static void *hk_exit_later(void *opaque)
{
    g_usleep(1500 * 1000);
    _exit(HK_LOST_EXIT);
    return NULL;
}

/*
 * After a peer is lost the library poisons the pages that died with it, so a
 * vCPU or a device that touches one gets SIGBUS.  QEMU's own SIGBUS handler
 * re-raises it for TCG and the process would die by a signal; end like the
 * rest of the cluster instead: say why, exit 3.  Async-signal-safe: the
 * message was formatted before the handler was installed.
 */
static void hk_sigbus_after_loss(int sig, siginfo_t *si, void *ctx)
{
    if (write(STDERR_FILENO, hk_sigbus_msg, hk_sigbus_msg_len) < 0) {
        /* nothing more to do: we are leaving anyway */
    }
    _exit(HK_LOST_EXIT);
}

static void hk_lost_bh(void *opaque)
{
    int node = (intptr_t)opaque;

    qapi_event_send_hyperkernel_node_state(node, "lost", hk_lost_msg);
    qemu_system_vmstop_request_prepare();
    qemu_system_vmstop_request(RUN_STATE_INTERNAL_ERROR);
}

/* library callback, event thread */
void hk_cb_peer_lost(void *opaque, int node, const struct hk_page_range *ranges,
                     size_t nranges, uint64_t lost_pages)
{
    struct sigaction sa = { .sa_sigaction = hk_sigbus_after_loss,
                            .sa_flags = SA_SIGINFO };
    pthread_t t;
    int off;

    if (hk_shutting_down(hks->hk)) {
        return;     /* a peer that stopped with the guest is no loss */
    }
    off = snprintf(hk_lost_msg, sizeof(hk_lost_msg),
                   "node %d lost; %" PRIu64 " guest pages lost", node, lost_pages);
    for (size_t i = 0; i < nranges && i < 8 && off < (int)sizeof(hk_lost_msg) - 64; i++) {
        off += snprintf(hk_lost_msg + off, sizeof(hk_lost_msg) - off,
                        "%s[0x%" PRIx64 "+%" PRIu64 "]", i ? " " : ": ",
                        ranges[i].offset, ranges[i].pages);
    }
    if (nranges > 8) {
        off += snprintf(hk_lost_msg + off, sizeof(hk_lost_msg) - off, " ...");
    }
    for (int k = 0; k < HK_MAX_VCPUS && off < (int)sizeof(hk_lost_msg) - 32; k++) {
        if (hk_vcpu_location(hks->hk, k) == node) {
            off += snprintf(hk_lost_msg + off, sizeof(hk_lost_msg) - off,
                            "; vCPU %d ran there", k);
        }
    }
    fprintf(stderr, "qemu-system-x86_64: hyperkernel node %u: %s; stopping\n",
            hks->node, hk_lost_msg);
    fflush(stderr);

    snprintf(hk_sigbus_msg, sizeof(hk_sigbus_msg),
             "qemu-system-x86_64: hyperkernel node %u: a guest page lost with "
             "node %d was touched; exiting\n", hks->node, node);
    hk_sigbus_msg_len = strlen(hk_sigbus_msg);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);

    aio_bh_schedule_oneshot(qemu_get_aio_context(), hk_lost_bh,
                            (void *)(intptr_t)node);
    /* whatever is blocked on a lost page, this process ends */
    pthread_create(&t, NULL, hk_exit_later, NULL);
    pthread_detach(t);
}

/*
 * QEMU blocks SIGBUS in every thread: qemu_thread_create blocks all signals
 * but SEGV/FPE/ILL, and the main loop reads SIGBUS from a signalfd.  But a
 * SIGBUS that a thread raises by its own access cannot wait: while it is
 * blocked the kernel kills the process with it, and the handler above never
 * runs.  So the threads that touch guest pages, the vCPU threads and the
 * main thread (device models), take SIGBUS.
 */
void hk_peer_loss_thread_init(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
