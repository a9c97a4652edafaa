//! The checks build.rs makes before the library is compiled.

include!("../build_support.rs");

#[test]
fn openssl_before_3_0_is_refused_with_the_reason_and_the_fix() {
    for (hex, shown) in [("1010117f", "1.1.1"), ("0x1000215f", "1.0.2"), ("30000000", ""), ("30500050", "")] {
        let r = check_openssl_version(Some(hex));
        if shown.is_empty() {
            assert_eq!(r, Ok(()), "{hex}");
        } else {
            let e = r.unwrap_err();
            assert!(e.contains("needs OpenSSL 3.0 or newer"), "{e}");
            assert!(e.contains(&format!("found is {shown}")), "{e}");
            assert!(e.contains("libssl-dev"), "{e}");
        }
    }
    assert!(check_openssl_version(Some("1010117f")).unwrap_err().contains("found is 1.1.1w"));
    assert!(check_openssl_version(Some("1010117f")).unwrap_err().contains("make OPENSSL=vendored"));
    assert_eq!(openssl_version_name(0x3050_0050), "3.5.5");
    assert_eq!(openssl_version_name(0x1000_214f), "1.0.2t");
    assert!(check_openssl_version(None).unwrap_err().contains("LibreSSL"));
    assert!(check_openssl_version(Some("zz")).is_err());
}

#[test]
fn this_build_found_a_new_enough_openssl() {
    // The library linked into this test was built, so build.rs accepted
    // what openssl-sys found; the version the crate reports agrees.
    assert!(openssl::version::number() as u64 >= MIN_OPENSSL, "{:x}", openssl::version::number());
}
