//! What a new user reads first: `nano-bench --help` opens with three runs to copy (issue #22).

use crate::run_binary;

#[test]
fn help_opens_with_three_examples() {
    let (code, help, stderr) = run_binary(&["--help"]);
    assert_eq!(code, Some(0), "{stderr}");
    let first_lines: Vec<&str> = help.lines().take(12).collect();
    assert!(first_lines[0].starts_with("nano-bench: load generator"), "{help}");
    assert_eq!(first_lines[2], "Examples:", "{help}");
    let runs: Vec<&str> =
        first_lines.iter().map(|l| l.trim()).filter(|l| l.starts_with("nano-bench --")).collect();
    assert_eq!(runs.len(), 3, "three example runs before anything else:\n{help}");
    assert!(runs[0].contains("--protocol tcp") && runs[0].contains("--workload get"), "{}", runs[0]);
    assert!(runs[1].contains("--protocol resp") && runs[1].contains("--workload mixed"), "{}", runs[1]);
    assert!(runs[1].contains("--pipeline"), "{}", runs[1]);
    assert!(runs[2].contains("--rate") && runs[2].contains("--plot"), "{}", runs[2]);
    assert!(help.find("Examples:") < help.find("Usage:"), "{help}");
}
