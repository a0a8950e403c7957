//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, which includes the reproducers
//! of every finding) through the targets on stable Rust, so CI checks them on every run even
//! without nightly or cargo-fuzz.

use std::path::PathBuf;

use taurus_fuzz_targets::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_runs_clean() {
    for target in TARGETS {
        let dir = corpus_dir(target.name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("reads the corpus directory").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for file in &files {
            let data = std::fs::read(file).expect("reads a corpus file");
            // A panic names the file: replay it with `cargo fuzz run <target> <file>`.
            eprintln!("{}: {}", target.name, file.display());
            (target.run)(&data);
        }
        println!("{}: {} corpus files replayed", target.name, files.len());
    }
}
