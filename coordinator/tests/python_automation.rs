//! The README's Automation section, run for real: Python's grpcio, with only
//! server reflection (v1alpha) to learn the API, trusting the coordinator's
//! certificate file under the name `weave-coordinator`, adds and lists a subnet.
//! Needs the venv that `.ci/install-deps.sh` makes (grpcio, grpcio-reflection).
mod common;

use std::{path::PathBuf, process::Command};

use common::TestCoordinator;

fn python() -> PathBuf {
    let venv = std::env::var("WEAVE_TEST_VENV").unwrap_or_else(|_| "/opt/weave-test/venv".into());
    let python = PathBuf::from(venv).join("bin/python3");
    assert!(python.exists(), "{} is missing: run .ci/install-deps.sh (it makes the venv)", python.display());
    python
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/automation/weave_api.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python venv of .ci/install-deps.sh (deploy/test.sh runs it)"]
async fn python_grpcio_adds_and_lists_a_subnet_through_reflection() {
    let c = TestCoordinator::start().await;
    let data = c.data_dir();
    let (cert, admin) = (data.join("tls/coordinator.crt"), data.join("admin.credential"));
    let run = |args: &[&str], admin: &std::path::Path| {
        let out = Command::new(python())
            .arg(script())
            .arg("--cert")
            .arg(&cert)
            .arg("--admin-file")
            .arg(admin)
            .args(args)
            .output()
            .expect("run python");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = tokio::task::block_in_place(|| run(&["subnet-add", "10.2.3.0/24"], &admin));
    assert_eq!(code, Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("\"cidr\": \"10.2.3.0/24\""), "{out}");

    let (code, out, err) = tokio::task::block_in_place(|| run(&["subnet-ls"], &admin));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("10.2.3.0/24") && out.contains("10.32.0.0/16"), "{out}");

    // The coordinator's own errors reach the script as gRPC codes.
    let (code, _, err) = tokio::task::block_in_place(|| run(&["subnet-add", "10.2.3.128/25"], &admin));
    assert_eq!(code, Some(1));
    assert!(err.starts_with("ALREADY_EXISTS") && err.contains("10.2.3.0/24"), "{err}");

    // A wrong secret is refused.
    let forged = c.dir.path().join("forged.credential");
    let real = std::fs::read_to_string(&admin).unwrap();
    let (head, _) = real.trim().rsplit_once('.').unwrap();
    std::fs::write(&forged, format!("{head}.{}\n", "A".repeat(43))).unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| run(&["status"], &forged));
    assert_eq!(code, Some(1));
    assert!(err.starts_with("UNAUTHENTICATED"), "{err}");

    // A credential that is not one is said in one line, exit 2, before any
    // call (it was a Python traceback; a review, 2026-12-07).
    for bad in ["wva1.x.y.z", "wva1.QUJD.pin.", "not a credential"] {
        let file = c.dir.path().join("bad.credential");
        std::fs::write(&file, bad).unwrap();
        let (code, _, err) = tokio::task::block_in_place(|| run(&["--address", "127.0.0.1:1", "status"], &file));
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("not a wva1. admin credential") && !err.contains("Traceback"), "{bad}: {err}");
    }
}
