//! The command line, run as a process. Being an integration test also makes `cargo test
//! --workspace` build the binary, so CI's crash step reuses the test build instead of a second one.

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crash-harness"))
}

#[test]
fn help_names_the_flags_the_scripts_use() {
    let out = harness().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--nodes",
        "--duration",
        "--kills",
        "--server",
        "--election-timeout-ms",
        "--server-arg",
        "--docker-node",
        "--docker-network",
        "--partition-hold",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn bad_arguments_fail_before_starting_anything() {
    let out = harness().args(["--nodes", "0"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes"));
    let out = harness().args(["--duration", "soon"]).output().expect("runs");
    assert!(!out.status.success());
}

#[test]
fn docker_nodes_need_a_network_and_well_formed_names() {
    let out = harness().args(["--docker-node", "1=some-container"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--docker-network"));
    let out =
        harness().args(["--docker-node", "some-container", "--docker-network", "n"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ID=CONTAINER"));
}

#[test]
fn a_missing_server_binary_fails_with_its_path() {
    let out = harness()
        .args(["--nodes", "1", "--duration", "1s", "--kills", "0", "--server", "/nonexistent/nanodb-server"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/nonexistent/nanodb-server"), "{stdout}");
    assert!(!stdout.contains("kept in"), "no server started, so no data dir is kept: {stdout}");
}
