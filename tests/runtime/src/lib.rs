//! `sluice-guest`: the `no_std` x86_64 PV guest runtime that Sluice's scenario
//! guests are built on.
//!
//! It speaks Xen's PV ABI only (spec §7), so one guest image runs both under
//! Sluice and as dom0 on real Xen 4.17, the oracle. It provides:
//!
//! * the image itself: Xen ELF notes ([`notes`]), the linker script
//!   (`link.ld`, handed to guests through `DEP_SLUICE_GUEST_LINK_SCRIPT`), the
//!   entry point with its own stack and the [`entry!`] macro ([`entry`]);
//! * hypercalls through the hypercall page ([`hypercall`]) and typed wrappers:
//!   [`evtchn`], [`sched`], [`vcpu`], [`console`], [`version`], [`physdev`];
//! * the ABI views: [`start_info`], [`shared_info`] (mapped with
//!   `update_va_mapping`), [`time`];
//! * event delivery: upcall and failsafe entry in assembly, a 2-level
//!   demultiplexer and per-port handlers ([`upcall`]), and the FIFO queue
//!   consumer it switches to ([`fifo`]);
//! * test output: TAP lines, `check!`/`check_eq!`, and the finish path that
//!   shuts the domain down with the verdict ([`tap`]).
//!
//! Secondary vcpus ([`smp`]) run on stacks of their own; the upcall path
//! finds the current vcpu from its stack pointer.
#![no_std]

pub mod console;
pub mod entry;
pub mod errno;
pub mod evtchn;
pub mod fifo;
pub mod hypercall;
pub mod notes;
pub mod physdev;
pub mod sched;
pub mod shared_info;
pub mod smp;
pub mod start_info;
pub mod tap;
pub mod time;
pub mod upcall;
pub mod vcpu;
pub mod version;

pub use errno::Errno;
pub use start_info::StartInfo;
