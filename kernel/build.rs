//! Links the kernel with its architecture's linker script and defmt's symbol table.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    println!("cargo:rerun-if-changed=src/arch/{arch}/linker.ld");

    // Only a bare-metal build links; a host `cargo clippy --workspace` only checks.
    if target_os != "none" {
        return;
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/src/arch/{arch}/linker.ld");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
