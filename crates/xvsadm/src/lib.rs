//! `xvsadm`, a drop-in for ipvsadm 1.31 that manages xvsd over its control
//! socket: command-line handling ([`run`]) and ipvsadm's output formats
//! ([`format`]).

pub mod format;
pub mod sort;

use std::io::{Read, Write};

/// Runs one xvsadm invocation (`args[0]` is the program name) and returns
/// its exit status.
pub fn run(
    args: &[String],
    _stdin: &mut dyn Read,
    _out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let _ = writeln!(
        err,
        "{}: not implemented yet",
        args.first().map(String::as_str).unwrap_or("xvsadm")
    );
    1
}
