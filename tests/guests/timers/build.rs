//! Links the guest with the runtime's linker script, as a fixed-address
//! (non-PIE) executable: Xen's PV loader applies no relocations.

fn main() {
    let script = std::env::var("DEP_SLUICE_GUEST_LINK_SCRIPT").unwrap_or_default();
    println!("cargo:rustc-link-arg-bins=-T{script}");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-znorelro");
    println!("cargo:rustc-link-arg-bins=--build-id=none");
    println!("cargo:rerun-if-env-changed=DEP_SLUICE_GUEST_LINK_SCRIPT");
}
