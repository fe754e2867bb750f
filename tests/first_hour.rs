//! The first hour with Qeltrix (issue 10): mistakes a new user makes get an answer that says
//! what is wrong, with an exit code of its own.

mod common;

use common::*;

#[test]
fn a_folder_where_a_container_is_expected_is_a_directory_error_with_exit_1() {
    let w = Work::with_key();
    std::fs::create_dir(w.path("d")).unwrap();
    for line in ["info d", "verify d --key-file key", "unpack d out --key-file key"] {
        let err = w.fails(line, 1);
        assert!(err.to_lowercase().contains("is a directory"), "{line}: {err}");
        assert!(!err.contains("incomplete"), "{line}: {err}");
    }
}
