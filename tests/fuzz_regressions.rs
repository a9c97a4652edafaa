//! Replays the fuzz inputs kept in the repository through the fuzz targets'
//! own code (fuzz/fuzz_targets/*_body.rs), without libFuzzer or sanitizers:
//! - fuzz/regressions/<target>/: inputs that once crashed, hung or leaked
//!   (add a file there for every bug a fuzz run finds);
//! - fuzz/seeds/<target>/: the seed corpus (real clients' handshakes, key
//!   and certificate files in many formats).
//!
//! `make fuzz` runs the targets for real (see fuzz/README.md).

use std::path::Path;

mod server_handshake {
    include!("../fuzz/fuzz_targets/server_handshake_body.rs");
}

mod key_cert_files {
    include!("../fuzz/fuzz_targets/key_cert_files_body.rs");
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for kind in ["regressions", "seeds"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.into_iter().filter(|f| f.is_file()) {
            if file.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let input = std::fs::read(&file).unwrap();
            eprintln!("replaying {}", file.display());
            run(&input);
            count += 1;
        }
    }
    count
}

#[test]
fn server_handshake_inputs_replay_cleanly() {
    assert!(replay("server_handshake", server_handshake::run) > 0, "no inputs found");
}

#[test]
fn key_cert_files_inputs_replay_cleanly() {
    assert!(replay("key_cert_files", key_cert_files::run) > 0, "no inputs found");
}
