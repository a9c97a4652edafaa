// Checks of build.rs, kept apart so that tests/build_support.rs can run
// them (`include!`d by both; no `use` items here).

/// The oldest OpenSSL the code works with: 3.0 (the session ticket callback
/// uses `SSL_CTX_set_tlsext_ticket_key_evp_cb` and `EVP_MAC`, new in 3.0).
pub const MIN_OPENSSL: u64 = 0x3000_0000;

/// `version` is openssl-sys's `DEP_OPENSSL_VERSION_NUMBER`: OpenSSL's
/// `OPENSSL_VERSION_NUMBER` in hex (0xMNN00PP0L), or `None` when it is not
/// OpenSSL (LibreSSL, BoringSSL) or not known.
pub fn check_openssl_version(version: Option<&str>) -> Result<(), String> {
    const HOW: &str = "install OpenSSL 3.0 or newer with its headers (Debian/Ubuntu: libssl-dev) \
                       and point OPENSSL_DIR at it if it is not the system's, or build with \
                       `make OPENSSL=vendored` (OpenSSL 3.5 LTS compiled in)";
    let Some(hex) = version else {
        return Err(format!(
            "libfio_tls needs OpenSSL 3.0 or newer, and openssl-sys found no OpenSSL version \
             (LibreSSL and BoringSSL are not supported): {HOW}"
        ));
    };
    let number = u64::from_str_radix(hex.trim().trim_start_matches("0x"), 16)
        .map_err(|_| format!("libfio_tls: cannot read the OpenSSL version number {hex:?} given by openssl-sys"))?;
    if number < MIN_OPENSSL {
        return Err(format!(
            "libfio_tls needs OpenSSL 3.0 or newer (its session ticket keys use the OpenSSL 3 \
             EVP_MAC interface), but the OpenSSL found is {} \
             (OPENSSL_VERSION_NUMBER 0x{number:x}): {HOW}",
            openssl_version_name(number)
        ));
    }
    Ok(())
}

/// OpenSSL's version as people write it, from `OPENSSL_VERSION_NUMBER`:
/// 3.x is 0xMNN00PP0L ("3.5.5"); before 3.0 it was 0xMNNFFPPS with the
/// patch letter as a number ("1.1.1w" is 0x1010117f).
pub fn openssl_version_name(number: u64) -> String {
    let (major, minor) = (number >> 28, (number >> 20) & 0xff);
    if major >= 3 {
        return format!("{major}.{minor}.{}", (number >> 4) & 0xff);
    }
    let (fix, letter) = ((number >> 12) & 0xff, (number >> 4) & 0xff);
    match letter {
        1..=26 => format!("{major}.{minor}.{fix}{}", char::from(b'a' + letter as u8 - 1)),
        _ => format!("{major}.{minor}.{fix}"),
    }
}
