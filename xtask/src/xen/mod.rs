//! `cargo xtask test --xen`: real Xen 4.17 as the oracle. Sluice implements
//! Xen's ABI, so every single-domain guest scenario also boots as dom0 on
//! Xen under QEMU TCG and must print the same TAP verdicts there.
//!
//! - `setup`: the Xen image (Debian's package, unpacked for QEMU);
//! - `oracle`: one guest booted on Xen, and that run judged on its own;
//! - `tap`: TAP lines read back from a serial log;
//! - `compare`: Sluice's lines against Xen's, test by test;
//! - `suite`: the whole run and its closing line.

mod compare;
pub mod oracle;
pub mod setup;
mod suite;
mod tap;

pub use suite::run;
