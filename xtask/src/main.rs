//! `cargo xtask`: build, run, test and bench Sluice.
fn main() {}
