//! Build script: regenerates include/fio_tls.h with cbindgen and sets the
//! shared library's SONAME and export list.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // A hand edit of the committed header is undone by the next build
    // (cbindgen rewrites the file only when its content differs).
    println!("cargo:rerun-if-changed=include/fio_tls.h");

    // libfio_tls.so.0, exporting only the fio_tls_* functions.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let map = out.join("fio_tls.map");
    std::fs::write(&map, "{\n  global:\n    fio_tls_*;\n  local:\n    *;\n};\n").expect("OUT_DIR is writable");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfio_tls.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", map.display());

    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml is readable");
    let header = dir.join("include").join("fio_tls.h");
    match cbindgen::Builder::new().with_crate(&dir).with_config(config).generate() {
        Ok(bindings) => {
            bindings.write_to_file(&header);
        }
        Err(e) => panic!("cbindgen could not generate {}: {e}", header.display()),
    }
}
