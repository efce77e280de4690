//! The ipvsadm 1.31 command grammar (popt rules, the commands/options legality
//! table, defaults and checks), shared by `xvsadm` and by `xvsd --rules`.
//!
//! popt is not clap, so the grammar is implemented here directly, in the
//! steps ipvsadm.c takes; messages and exit codes are ipvsadm's:
//! - `popt.rs`: the option table and the scan of argv;
//! - `options.rs`: the option loop (process_options), values read with
//!   `values.rs` (addresses, ports, numbers, timeouts), checked with
//!   `legal.rs` (the commands/options legality matrix);
//! - `build.rs`: the per-command checks and the [`Command`] they build;
//! - `restore.rs`: `-R` input; `usage.rs`: `-h` and `-v`.

mod build;
mod command;
mod legal;
mod options;
mod popt;
mod restore;
mod usage;
mod values;

pub use crate::check::MAX_TIMEOUT;
pub use command::{fmt, CmdError, Command, ListWhat};
pub use popt::{options, OptArg, OptionInfo};
pub use restore::{parse_rules, restore_lines};
pub use usage::{usage, VERSION_LINE};
pub use values::{port_service, service_port};

use command::fail;
use options::Gathered;

/// Parses one ipvsadm command line (`args[0]` is the program name).
pub fn parse(args: &[String]) -> Result<Command, CmdError> {
    let program = args.first().map(String::as_str).unwrap_or("ipvsadm");
    if args.len() <= 1 {
        return Ok(Command::List {
            what: ListWhat::All,
            format: 0,
        });
    }
    // The mark commands take an iptables rule, whose words (-d, -p, -s, -m,
    // -j) are not ipvsadm's: the rest of the line is the rule.
    match args[1].as_str() {
        "--add-mark" | "--del-mark" => {
            let words: Vec<String> = if args.len() == 3 {
                args[2].split_whitespace().map(str::to_string).collect()
            } else {
                args[2..].to_vec()
            };
            let m = crate::mark::MarkSpec::parse(&words).or_else(fail)?;
            return Ok(if args[1] == "--add-mark" {
                Command::AddMark(m)
            } else {
                Command::DelMark(m)
            });
        }
        "--list-marks" => {
            return match args.get(2) {
                None => Ok(Command::ListMarks),
                Some(w) => fail(format!("--list-marks takes no argument: `{w}'")),
            };
        }
        _ => {}
    }
    match options::process_options(program, &args[1..])? {
        Gathered::Help => Ok(Command::Help),
        Gathered::Version => Ok(Command::Version),
        Gathered::Entry(cmd, e) => build::command(cmd, *e),
    }
}

#[cfg(test)]
mod tests;
