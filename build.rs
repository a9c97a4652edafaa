//! Build script: checks the OpenSSL version, regenerates include/fio_tls.h
//! with cbindgen and sets the shared library's SONAME and export list.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    openssl_version_gate();
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

/// Reports the OpenSSL that openssl-sys found (system) or built (vendored)
/// and refuses anything older than 3.0. openssl-sys passes its version to
/// us, a direct dependent, as `DEP_OPENSSL_VERSION_NUMBER` (hex
/// `OPENSSL_VERSION_NUMBER`, 0xMNN00PP0L); LibreSSL and others get
/// `DEP_OPENSSL_LIBRESSL_VERSION_NUMBER` or none at all.
fn openssl_version_gate() {
    let vendored = std::env::var_os("CARGO_FEATURE_VENDORED").is_some();
    let source = if vendored { "vendored: built from source by openssl-src" } else { "system" };
    if let Ok(libressl) = std::env::var("DEP_OPENSSL_LIBRESSL_VERSION_NUMBER") {
        panic!(
            "fio_tls needs OpenSSL 3.0 or newer; openssl-sys found LibreSSL (version number {libressl}). \
             Install OpenSSL 3 development files (Debian: libssl-dev) or build with `make OPENSSL=vendored`."
        );
    }
    let Ok(hex) = std::env::var("DEP_OPENSSL_VERSION_NUMBER") else {
        panic!(
            "fio_tls needs OpenSSL 3.0 or newer; openssl-sys did not report an OpenSSL version \
             (BoringSSL or AWS-LC?). Install OpenSSL 3 development files (Debian: libssl-dev) \
             or build with `make OPENSSL=vendored`."
        );
    };
    let number = u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
    let (major, minor, patch) = (number >> 28, (number >> 20) & 0xff, (number >> 4) & 0xff);
    let version = if major >= 3 {
        format!("{major}.{minor}.{patch}")
    } else {
        // 0xMNNFFPPS: 1.1.1w is 0x1010117f (patch letter 0x17 = 'w')
        let fix = (number >> 12) & 0xff;
        let letter = if patch > 0 && patch <= 26 { char::from(b'a' + patch as u8 - 1).to_string() } else { String::new() };
        format!("{major}.{minor}.{fix}{letter}")
    };
    if major < 3 {
        panic!(
            "fio_tls needs OpenSSL 3.0 or newer, but openssl-sys found OpenSSL {version} ({source}). \
             Install OpenSSL 3 development files (Debian 12: libssl-dev 3.0), point OPENSSL_DIR at an \
             OpenSSL 3 installation, or build with `make OPENSSL=vendored` (OpenSSL 3.5 LTS compiled in)."
        );
    }
    println!("cargo:warning=fio_tls: building against OpenSSL {version} ({source})");
    println!("cargo:rustc-env=FIO_TLS_OPENSSL_BUILT={version} ({source})");
}
