//! Link the `weft` binary with packed relative relocations (DT_RELR, glibc ≥ 2.36): a CLI
//! process starts faster when the loader has fewer relocation entries to walk.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
