/*
 * Hook points for the software-defined-server (hyperkernel) glue.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "system/hk-hooks.h"

bool hk_enabled;
void (*hk_vcpu_thread_init_hook)(CPUState *cpu);
void (*hk_cpu_loop_hook)(CPUState *cpu);
bool (*hk_io_hook)(CPUState *cpu, MemoryRegion *mr);
bool (*hk_pio_hook)(CPUState *cpu);
bool (*hk_force_io_hook)(MemoryRegion *mr);
bool (*hk_apic_forward_hook)(void *apic, int mode, int vec, int trig);
void (*hk_apic_addr_hook)(void *apic);
bool (*hk_apic_eoi_hook)(int vec);
bool (*hk_device_irq_blocked_hook)(void);
bool (*hk_code_uncached_hook)(uint64_t ram_addr);
void (*hk_pause_hook)(CPUState *cpu);
