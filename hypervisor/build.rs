//! Links the `sluice` binary with its own layout (`linker.ld`).
//!
//! These arguments apply to the hypervisor binary only; guests built for the
//! same target keep the target's defaults.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    // The code is position-independent (the target's default relocation
    // model, which the prebuilt `core` also uses), but the image runs only at
    // its link address, so link a plain static executable: every address is
    // resolved now and nothing needs relocating at boot.
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
