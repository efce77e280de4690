//! `-R` input: lines split as ipvsadm's config_stream splits them, and rules
//! in `-S`/`-R` format read into ops.

use super::parse;

/// Splits `-R` input into command lines as ipvsadm's config_stream does: words
/// separated by spaces, tabs and CRs, one command per line, every word
/// `ipvsadm` dropped, lines without words skipped. Each line comes with its
/// 1-based line number and `program` prepended as argv[0].
pub fn restore_lines(input: &str, program: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (n, line) in input.split('\n').enumerate() {
        let words: Vec<String> = line
            .split([' ', '\t', '\r'])
            .filter(|w| !w.is_empty() && *w != "ipvsadm")
            .map(str::to_string)
            .collect();
        if words.is_empty() {
            continue;
        }
        let mut argv = vec![program.to_string()];
        argv.extend(words);
        out.push((n + 1, argv));
    }
    out
}

/// Parses rules in `-S`/`-R` format into ops. A line that is not a rule change
/// or does not parse is an error naming its line number.
pub fn parse_rules(input: &str, program: &str) -> Result<Vec<crate::proto::Op>, String> {
    let mut ops = Vec::new();
    for (n, argv) in restore_lines(input, program) {
        match parse(&argv) {
            Ok(c) => match c.to_op() {
                Some(op) => ops.push(op),
                None => return Err(format!("line {n}: not a rule command")),
            },
            Err(e) => return Err(format!("line {n}: {}", e.message.trim_end())),
        }
    }
    Ok(ops)
}
