/*
 * Software-defined server glue: pulling a vCPU out of a stall.
 *
 * When the policy sends a stalled vCPU to the page (HK_MOVE_VCPU), its
 * thread is blocked in a userfault inside a guest memory access.  A signal
 * ends that wait: the kernel delivers it at the faulting host instruction
 * (and would retry the access after the handler returns).  If that access
 * was made by translated code, the handler unwinds to the guest
 * instruction's start, as QEMU does for its own faults
 * (cpu_restore_state + cpu_loop_exit): the instruction has had no effect
 * yet (TCG writes guest registers back before every memory access, which
 * may fault), so it runs again on the node the vCPU moves to.
 *
 * The handler unwinds only when both hold:
 *  - the thread was still blocked when the signal came: the library's wake
 *    generation is the same as when the event thread saw it blocked in
 *    handle_userfault (hk_thread_in_fault); the library bumps it before
 *    anything that can wake a faulting thread.  Otherwise the thread may be
 *    anywhere in its code, so the handler returns and does nothing.
 *  - the host PC is in the translation buffer.  Faults taken outside
 *    translated code are never unwound (the thread re-faults and the page
 *    comes): the softmmu slow paths (accesses that cross a page, atomics
 *    done in helpers, the x86 string and FPU/SSE state helpers that touch
 *    memory from C), page-table walks in the TLB fill, device emulation and
 *    DMA (io-node), and the loading of a vCPU's state.
 *
 * After unwinding, cpu_exec returns (cpu_exit was called when the move was
 * asked), hk_pull_left tells the library the stall is over without the page,
 * and the vCPU loop exports the vCPU to the page's node.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "exec/cpu-common.h"
#include "hw/core/cpu.h"
#include "tcg/tcg.h"
#include "internal.h"

#include <ucontext.h>

/* cpu_restore_state() takes a return address inside the call of a helper
 * and steps back by GETPC_ADJ (accel/tcg/tb-internal.h); a signal gives the
 * faulting instruction itself, so step forward first (as user mode does in
 * adjust_signal_pc). */
#define HK_GETPC_ADJ 2

#if defined(__x86_64__)
#define HK_CAN_PULL true
static uintptr_t hk_signal_pc(void *ctx)
{
    return ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
}
#elif defined(__aarch64__)
#define HK_CAN_PULL true
static uintptr_t hk_signal_pc(void *ctx)
{
    return ((ucontext_t *)ctx)->uc_mcontext.pc;
}
#else
#define HK_CAN_PULL false       /* no PC to unwind from: pages always come */
static uintptr_t hk_signal_pc(void *ctx)
{
    return 0;
}
#endif

#define HK_PULL_SIGNAL (SIGRTMIN + 2)

/* the vCPU's own thread, interrupted in (or after) its fault */
static void hk_pull_signal(int sig, siginfo_t *si, void *ctx)
{
    CPUState *cpu = current_cpu;
    HkPull *pl;
    uintptr_t pc = hk_signal_pc(ctx);

    if (!cpu || cpu->cpu_index >= HK_MAX_VCPUS) {
        return;
    }
    pl = &hks->pull[cpu->cpu_index];
    if (!qatomic_xchg(&pl->armed, 0)) {
        return;
    }
    if (hk_wake_generation(hks->hk) != pl->generation) {
        qatomic_inc(&hks->pulls_raced);     /* it may have run on: leave it */
        return;
    }
    if (!pc || !cpu_restore_state(cpu, pc + HK_GETPC_ADJ)) {
        qatomic_inc(&hks->pulls_outside_tb); /* it re-faults; the page comes */
        return;
    }
    qatomic_set(&pl->left, 1);
    qatomic_inc(&hks->pulls);
    cpu_loop_exit(cpu);
}

void hk_pull_init(void)
{
    struct sigaction sa = { .sa_sigaction = hk_pull_signal,
                            /* no mask to restore: cpu_loop_exit leaves the
                             * handler by siglongjmp without one */
                            .sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART };

    sigemptyset(&sa.sa_mask);
    if (sigaction(HK_PULL_SIGNAL, &sa, NULL) < 0) {
        hk_fatal("cannot install the signal that pulls vCPUs out of stalls: %s",
                 strerror(errno));
    }
}

/* a vCPU thread starts: QEMU creates its threads with every signal blocked */
void hk_pull_thread_init(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, HK_PULL_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/*
 * Event thread, from on_stall: the policy moves vCPU k, whose thread tid is
 * blocked on the page of stall.  Sends the signal if the thread is in a
 * fault right now and this host can unwind; true if it was sent.  Either
 * way the vCPU moves at its next loop exit: not pulled out, it re-faults and
 * the library brings the page first.
 */
bool hk_pull_start(CPUState *cs, pid_t tid, const struct hk_stall *stall)
{
    HkPull *pl = &hks->pull[cs->cpu_index];

    if (!HK_CAN_PULL) {
        return false;
    }
    if (!hk_thread_in_fault(tid)) {
        qatomic_inc(&hks->pulls_not_in_fault);
        return false;
    }
    pl->generation = stall->wake_generation;
    pl->offset = stall->offset;
    pl->stall_id = stall->id;
    qatomic_set(&pl->armed, 1);
    if (pthread_kill(cs->thread->thread, HK_PULL_SIGNAL) != 0) {
        qatomic_set(&pl->armed, 0);
        return false;
    }
    return true;
}

/* vCPU thread, outside cpu_exec: it was pulled out; forget its stall */
void hk_pull_left(CPUState *cs)
{
    HkPull *pl = &hks->pull[cs->cpu_index];

    if (qatomic_xchg(&pl->left, 0)) {
        hk_stall_left(hks->hk, pl->offset, pl->stall_id);
    }
}
