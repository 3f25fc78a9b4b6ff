//! `abi/` must match what `contracts/` compiles to.

use crate::harness::{repo_root, run_in_repo};

#[test]
fn abi_dir_is_fresh() {
    let (ok, out, err) = run_in_repo(&repo_root().join("scripts/gen-abi"), &["--check"], &[]);
    assert!(
        ok,
        "abi/ is stale against contracts/: run `make abi` and commit.\n{out}\n{err}"
    );
}
