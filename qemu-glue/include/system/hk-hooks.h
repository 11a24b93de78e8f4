/*
 * Hook points for the software-defined-server (hyperkernel) glue.
 *
 * Generic code calls these NULL-checked pointers; the glue in
 * hw/i386/hyperkernel/ sets them when a hyperkernel object exists.
 * Without it every pointer stays NULL and nothing changes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SYSTEM_HK_HOOKS_H
#define SYSTEM_HK_HOOKS_H

#include "exec/hwaddr.h"

/* True once a hyperkernel object has been configured. */
extern bool hk_enabled;

/* A vCPU thread starts (BQL held, before the first cpu_can_run). */
extern void (*hk_vcpu_thread_init_hook)(CPUState *cpu);
/* Between tcg_cpu_exec and qemu_wait_io_event (BQL held). */
extern void (*hk_cpu_loop_hook)(CPUState *cpu);
/* io_prepare: true if this MMIO access must not run on this node. */
extern bool (*hk_io_hook)(CPUState *cpu, MemoryRegion *mr);
/* helper_in/out: true if port I/O must not run on this node. */
extern bool (*hk_pio_hook)(CPUState *cpu);
/* tlb_set_page_full: true if a RAM/ROMD region must take the I/O path. */
extern bool (*hk_force_io_hook)(MemoryRegion *mr);
/* One-line hooks for the APIC (see hw/intc/apic.c). */
extern bool (*hk_apic_forward_hook)(void *apic, int mode, int vec, int trig);
extern void (*hk_apic_addr_hook)(void *apic);
extern bool (*hk_apic_eoi_hook)(int vec);
/*
 * get_page_addr_code_hostp and tb_gen_code: true if the code of this RAM page
 * (a ram_addr_t) must not be cached in TBs now (a store to it waits).
 */
extern bool (*hk_code_uncached_hook)(uint64_t ram_addr);
/* helper_pause (no BQL): a vCPU spins in a PAUSE loop. */
extern void (*hk_pause_hook)(CPUState *cpu);
/* Device interrupts are only live on the io-node. */
extern bool (*hk_device_irq_blocked_hook)(void);

#endif
