//! The Sluice hypervisor image.
//!
//! QEMU loads this ELF with `-kernel` (multiboot1, a.out kludge); `arch`'s
//! boot code enters long mode and calls [`boot`]'s entry, which runs the
//! start-up sequence in [`startup`].
//!
//! Domains: [`domain::builder`] turns each boot module into a PV domain
//! (Xen's PV memory layout, ELF notes, start_info, bootstrap page tables);
//! [`sched`] spreads vcpus over the pCPUs and time-shares them; `arch::guest_entry`
//! delivers every `syscall`, interrupt and exception from a guest to
//! [`hypercall`]'s hooks, which serve the call and inject pending upcalls
//! ([`upcall`]) on the way back; [`events`] connects evtchn-core (wake-ups,
//! the shared_info view); [`timers`] drives VIRQ_TIMER from each pCPU's
//! LAPIC timer (one-shot, armed for the earliest guest deadline or the
//! next 1 ms scheduler tick, which also runs the hypervisor's own one-shot
//! timers, [`hvtimer`]);
//! [`pirq`] routes host interrupt lines to guests' PIRQ ports.
//!
//! The crate is `#![deny(unsafe_code)]`. The modules that opt out, each for
//! raw memory only `arch` cannot own, are:
//! - [`boot`]: the `#[no_mangle]` entry symbol the boot assembly calls;
//! - [`physmem`]: copying bytes out of physical memory (multiboot info,
//!   ACPI tables) through the direct map;
//! - [`memory::frames`]: vouching for its frames as page-table frames;
//! - [`memory::heap`]: handing the heap region to the allocator;
//! - [`memory::space`]: switching to the hypervisor's page tables and
//!   vouching for what it set aside (stacks, the trampoline page, the
//!   LAPIC and IOAPIC windows);
//! - [`memory::guest_frames`]: filling guest frames through the direct map
//!   and viewing a shared_info frame as atomics;
//! - [`domain::reaper`]: freeing a destroyed domain's frames and releasing
//!   its vcpu stacks once every pCPU has passed a quiescent point;
//! - [`running`]: each pCPU's running domain as a raw `Arc` pointer, which
//!   the guest entry paths borrow without a lookup.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod acpi;
mod boot;
mod bootinfo;
mod cmdline;
mod console;
mod cpus;
mod debug_keys;
mod domain;
mod events;
mod hvtimer;
mod hypercall;
mod irq;
mod memory;
mod panic;
mod physmem;
mod pirq;
mod running;
mod sched;
#[cfg(feature = "selftest")]
mod selftest;
mod startup;
mod static_evtchn;
mod time;
mod timers;
mod upcall;
