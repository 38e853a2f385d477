//! Publishes the path of the guest linker script to dependents.
//!
//! The runtime declares `links = "sluice-guest"`, so every guest's build
//! script receives `DEP_SLUICE_GUEST_LINK_SCRIPT` and passes it to the linker
//! with `-T` (link arguments set here would only apply to this crate).

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = std::path::Path::new(&manifest_dir).join("link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:link_script={}", script.display());
}
