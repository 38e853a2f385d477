//! Everything x86_64-specific and privileged in Sluice.
//!
//! This crate holds all of Sluice's `unsafe` that touches the machine:
//! inline assembly (boot entry, interrupt stubs, the AP trampoline, the
//! `syscall` entry and the exits to ring 3 in `guest_entry`, the guest-copy
//! routine in `guest_copy`, suspending and resuming a vcpu's hypervisor flow
//! in `stack`), MSRs, port I/O, descriptor tables, page tables, APIC
//! registers. Each block says why it holds. Everything above it (the `hypervisor` crate) calls safe
//! functions.
#![no_std]

extern crate alloc;

pub mod backtrace;
pub mod boot;
pub mod cpu;
pub mod fatal;
pub mod fpu;
pub mod gdt;
pub mod guest_copy;
pub mod guest_entry;
pub mod idt;
pub mod ioapic;
pub mod lapic;
pub mod layout;
pub mod paging;
pub mod percpu;
pub mod pit;
pub mod qemu;
pub mod rtc;
pub mod serial;
pub mod smp;
pub mod stack;
pub mod tsc;
pub mod vectors;
