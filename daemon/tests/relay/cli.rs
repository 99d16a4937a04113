//! The command lines as an operator and an official meet them: help for every command,
//! configuration checking with its exit codes, and (`readme.rs`) the README walk-through
//! with the real `relaisd serve --dev` and `relais` binaries.

mod readme;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relais_testkit::relaisd;

/// The `relais` binary sits beside `relaisd` in the same target directory.
fn relais_bin() -> PathBuf {
    let path = relaisd().with_file_name("relais");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        path.display()
    );
    path
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run")
}

/// Every command and subcommand of both programs, as their definitions list them, prints a
/// usage line and describes each of its entries.
#[test]
fn help_is_complete_for_every_command() {
    let programs = [
        (relaisd().to_path_buf(), relaisd::cli::command()),
        (relais_bin(), relais_client::cli::command()),
    ];
    let commands: Vec<(&PathBuf, Vec<String>)> = programs
        .iter()
        .flat_map(|(bin, command)| {
            command_paths(command, Vec::new())
                .into_iter()
                .map(move |path| (bin, path))
        })
        .collect();
    assert!(commands.len() > 50, "every command of both: {commands:?}");
    for (bin, args) in commands {
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.push("--help");
        let out = run(bin, &full);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} {full:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Usage:"), "{full:?}: no usage line:\n{text}");
        // Every listed command, argument and option carries a description, on its line
        // or on an indented line below it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_entry = line.starts_with("  ") && !line.starts_with("   ");
            if !is_entry {
                continue;
            }
            let entry = line.trim_start();
            let inline = entry
                .split_once("  ")
                .is_some_and(|(_, rest)| !rest.trim().is_empty());
            let below = lines
                .get(i + 1)
                .is_some_and(|next| next.starts_with("    ") && !next.trim().is_empty());
            assert!(
                inline || below,
                "{full:?}: undocumented entry {entry:?}\n{text}"
            );
        }
    }
}

/// The path of `command` and of every command under it, `help` aside.
fn command_paths(command: &clap::Command, path: Vec<String>) -> Vec<Vec<String>> {
    let mut paths = vec![path.clone()];
    for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
        let mut path = path.clone();
        path.push(sub.get_name().to_owned());
        paths.extend(command_paths(sub, path));
    }
    paths
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "domain = \"ministere.gouv.fr\"\n").expect("write");
    let out = run(relaisd(), &["check-config", good.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "domain = \"ministere.gouv.fr\"\n[limits]\nframe_bytes_max = 0\n",
    )
    .expect("write");
    let out = run(relaisd(), &["check-config", bad.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "a bad configuration exits with EX_CONFIG"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("bad.toml:3: frame_bytes_max: must be greater than 0"),
        "{error}"
    );

    let out = run(relaisd(), &["serve", "--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a bad command line exits with EX_USAGE"
    );
}

/// `relaisd keys dev-certificates` writes what `serve --dev` would, in a directory of its
/// own, and keeps a complete set on later runs (the bench runs it before every node).
#[test]
fn dev_certificates_are_written_once_and_kept() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let out = run(relaisd(), &["keys", "dev-certificates", "--data", data_arg]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("wrote the development CA"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "the directory is private");
    assert_eq!(mode("server.key"), 0o600, "the key is private");
    let ca = std::fs::read(data.join("ca.pem")).expect("ca.pem");
    assert!(std::fs::read(data.join("server.pem")).is_ok_and(|pem| !pem.is_empty()));

    let out = run(
        relaisd(),
        &[
            "keys",
            "dev-certificates",
            "--data",
            data_arg,
            "--name",
            "relay.test",
        ],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("kept the development CA"),
        "{printed}"
    );
    assert_eq!(std::fs::read(data.join("ca.pem")).expect("ca.pem"), ca);
}

/// The configuration reference's examples are valid configurations.
#[test]
fn config_reference_examples_pass_check_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/reference/config.md"
    ))
    .expect("docs/reference/config.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut examples = 0;
    for (i, block) in text.split("```toml\n").skip(1).enumerate() {
        let example = block.split("```").next().expect("a closed block");
        let path = dir.path().join(format!("example{i}.toml"));
        std::fs::write(&path, example).expect("write");
        let out = run(relaisd(), &["check-config", path.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "example {i} is invalid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        examples += 1;
    }
    assert!(
        examples >= 2,
        "the reference shows a complete and a minimal example"
    );
}
