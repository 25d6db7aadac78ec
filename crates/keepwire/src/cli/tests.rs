//! The command line as people meet it: help everywhere, JSON for scripts.

use super::*;

/// Every subcommand and every argument says what it is for (`--help`
/// is how people learn the CLI).
#[test]
fn every_command_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() && path.split(' ').count() > 2 {
            missing.push(format!("{path} (the command)"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&<Cli as clap::CommandFactory>::command(), "", &mut missing);
    assert!(
        missing.is_empty(),
        "without help text:\n{}",
        missing.join("\n")
    );
}

/// Every command a script may run answers in JSON with `--json`
/// (errors too, see `main`); only the long-running services and the
/// interactive client do not.
#[test]
fn every_command_takes_json() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_name() == "help" {
            return; // clap's own, built in
        }
        let path = format!("{path} {}", cmd.get_name());
        let leaf = cmd.get_subcommands().next().is_none();
        let json = cmd.get_arguments().any(|a| a.get_id() == "json");
        let exempt = [
            " keepwire serve",
            " keepwire server",
            " keepwire records serve",
            " keepwire records office",
            " keepwire witness serve",
            " keepwire bench",
            " keepwire bench report",
            " keepwire chat",
        ];
        if (leaf || path == " keepwire chat") && !json && !exempt.contains(&path.as_str()) {
            missing.push(path.clone());
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, missing);
        }
    }
    let mut missing = Vec::new();
    // Built, so that global flags (`chat --json`) reach the subcommands.
    let mut cli = <Cli as clap::CommandFactory>::command();
    cli.build();
    walk(&cli, "", &mut missing);
    assert!(
        missing.is_empty(),
        "without --json:\n{}",
        missing.join("\n")
    );
}
