//! Boot self-tests (`--features selftest`, chosen with `selftest=<name>`).
//!
//! Each test prints what it measured and a verdict line that appears only
//! when its check passed; the run ends with the pass or fail exit code
//! (`pagefault`, `nx`, `wp`, `smap`, `smep`, `panic` and `stackoverflow` end with the panic
//! code, by design). The scenarios under `tests/scenarios/` name the lines
//! they expect.

mod cpus;
mod dispatch;
mod fatal;
mod guest_access;
mod hvtimer;
mod ioapic;
mod ipi;
mod iret_fault;
mod pagefault;
mod pirq_eoi;
mod pirq_follow;
mod pirq_map_race;
mod reaper_view;
pub mod spoiled_tables;
mod syscall_edge;
mod syscall_floor;
mod syscall_probe;
mod timer;
mod window;

pub use dispatch::run;
