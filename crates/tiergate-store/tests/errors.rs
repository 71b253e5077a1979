//! A store that cannot be opened says which file and keeps redb's own error as its source, so
//! an operator (and the binary's error line) sees both, and code can match redb's.

use std::error::Error;
use std::path::PathBuf;

use tiergate_store::{EmbeddedStore, ErrorChain, StoreError};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tiergate-store-errors-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_corrupt_file_gives_redbs_error_as_the_source() {
    let d = dir("corrupt");
    let file = d.join("tiergate.redb");
    std::fs::write(&file, vec![0x5au8; 64 * 1024]).unwrap();
    let err = EmbeddedStore::open(&d).expect_err("a corrupt file is refused");
    assert!(
        matches!(&err, StoreError::Open { path, .. } if *path == file),
        "{err:?}"
    );
    let source = err.source().expect("redb's error is kept");
    assert!(
        source.downcast_ref::<redb::DatabaseError>().is_some(),
        "{source:?}"
    );
    // The message names the file; the chain adds redb's reason after it, once.
    let chain = ErrorChain(&err).to_string();
    assert!(
        chain.starts_with(&format!("store {}: cannot open: ", file.display())),
        "{chain}"
    );
    assert!(chain.ends_with(&source.to_string()), "{chain}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_locked_file_gives_redbs_already_open() {
    let d = dir("locked");
    let held = EmbeddedStore::open(&d).unwrap();
    let err = EmbeddedStore::open(&d).expect_err("one process at a time");
    let source = err
        .source()
        .and_then(|s| s.downcast_ref::<redb::DatabaseError>());
    assert!(
        matches!(source, Some(redb::DatabaseError::DatabaseAlreadyOpen)),
        "{err:?}"
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_data_directory_that_is_a_file_gives_the_io_error() {
    let d = dir("notadir");
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&file).expect_err("not a directory");
    assert!(matches!(err, StoreError::Dir { .. }), "{err:?}");
    assert!(
        err.source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
