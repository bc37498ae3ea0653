//! Every input under `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` (crashes the
//! fuzzers once found, kept forever) runs through its fuzz target's entry point.

use std::path::Path;

use crate::fuzz_entry::TARGETS;

#[test]
fn every_seed_and_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    for (target, entry) in TARGETS {
        for kind in ["seeds", "regressions"] {
            let Ok(files) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for file in files {
                let path = file.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| entry(&data));
                assert!(outcome.is_ok(), "{target}: {} fails", path.display());
                ran += 1;
            }
        }
    }
    assert!(
        ran >= TARGETS.len(),
        "every target has at least one seed ({ran} inputs ran)"
    );
}
