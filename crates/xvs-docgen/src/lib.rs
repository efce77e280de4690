//! Man pages and shell completions of xvs's binaries, made when the Debian
//! package is built (`scripts/mkdeb.sh`), never kept in the tree, so they
//! cannot fall behind the command lines they describe.
//!
//! - The clap binaries (`xvsd`, `xvs-lab`, `xvs-bench`) call
//!   [`generate_if_asked`] first thing in `main`: `BIN --generate
//!   man|bash|zsh` prints the page (clap_mangen, plus the hand-written
//!   sections of `man/`) or the completion script (clap_complete). It is
//!   looked at before clap parses, so it is in no help, page or completion.
//! - `xvsadm` speaks ipvsadm's grammar, not clap's: its completions are made
//!   here from the parser's own option table ([`xvsadm_completion`], printed
//!   by the `xvs-docgen` binary); its man page is written by hand
//!   (`docs/man/xvsadm.8`), and a test checks it names every option.

#![forbid(unsafe_code)]

use clap::Command;
use std::fmt::Write as _;
use xvs_ctl::cmdline::{self, OptArg};

/// The version every page and completion carries (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// If the process was started as `NAME --generate WHAT`, prints WHAT for the
/// clap command `C` and returns the exit status; otherwise `None`.
pub fn generate_if_asked<C: clap::CommandFactory>(name: &'static str) -> Option<i32> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("--generate") {
        return None;
    }
    let what = args.next().unwrap_or_default();
    Some(match render(C::command(), name, &what) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("{name}: --generate: {e}");
            2
        }
    })
}

/// `man`, `bash` or `zsh` output for the clap command `cmd` named `name`.
pub fn render(cmd: Command, name: &'static str, what: &str) -> Result<String, String> {
    let mut cmd = cmd
        .name(name)
        .bin_name(name)
        .version(VERSION)
        .disable_help_subcommand(true);
    cmd.build();
    match what {
        "man" => man(&cmd, name).map_err(|e| e.to_string()),
        "bash" | "zsh" => {
            let shell = if what == "bash" {
                clap_complete::Shell::Bash
            } else {
                clap_complete::Shell::Zsh
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut out);
            String::from_utf8(out).map_err(|e| e.to_string())
        }
        other => Err(format!("`{other}': expected man, bash or zsh")),
    }
}

/// Manual section of each binary's page: the daemon is administration (8).
pub fn section(name: &str) -> &'static str {
    match name {
        "xvsd" => "8",
        _ => "1",
    }
}

/// A longer DESCRIPTION than the one-line `about` of the command line.
fn description(name: &str) -> Option<&'static str> {
    match name {
        "xvsd" => Some(
            "xvsd is the xvs director: it does in userspace what Linux IPVS does in the kernel. \
An XDP program steers the frames of the virtual services on the given interfaces to \
AF_XDP sockets (AF_PACKET where XDP cannot be had); one worker per RX queue looks them \
up in a lock-free connection table, schedules new flows to real servers with the IPVS \
schedulers, rewrites them for NAT, DR, IPIP tunnel or FULLNAT and transmits them. \
Everything else goes on to the kernel untouched.

The rules are set with xvsadm(8) over the control socket, loaded from a file in the \
format of xvsadm -S (--rules), or read with their health checks from a keepalived.conf \
(--keepalived-conf). Routes and neighbours are mirrored from the kernel over netlink.",
        ),
        _ => None,
    }
}

/// The hand-written sections that follow the generated ones.
fn extra(name: &str) -> &'static str {
    match name {
        "xvsd" => include_str!("../man/xvsd.roff"),
        "xvs-lab" => include_str!("../man/xvs-lab.roff"),
        "xvs-bench" => include_str!("../man/xvs-bench.roff"),
        _ => "",
    }
}

/// One page for the binary and its subcommands: clap_mangen's sections for
/// the top level, then a section per subcommand (its synopsis, description
/// and options), then the written sections.
fn man(cmd: &Command, name: &str) -> std::io::Result<String> {
    let page = |c: &Command| {
        clap_mangen::Man::new(c.clone())
            .section(section(name))
            .source(format!("xvs {VERSION}"))
            .manual("xvs")
    };
    let described;
    let cmd = match description(name) {
        Some(text) => {
            described = cmd.clone().long_about(text);
            &described
        }
        None => cmd,
    };
    let top = page(cmd);
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        top.render_options_section(&mut out)?;
    }
    let subs: Vec<&Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let mut text = String::from_utf8(out).map_err(std::io::Error::other)?;
    // The list of commands points into this page, not at pages of their own
    // (clap_mangen's list names `xvs-lab-up(1)` and the like).
    if !subs.is_empty() {
        text.push_str(".SH COMMANDS\n");
        for sub in &subs {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(
                text,
                ".TP\n\\fB{}\\fR\n{}",
                escape(sub.get_name()),
                escape(&about)
            );
        }
    }
    for sub in subs {
        let p = page(sub);
        let _ = writeln!(
            text,
            ".SH \"{}\"",
            sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase()
        );
        let mut part = Vec::new();
        p.render_synopsis_section(&mut part)?;
        part.extend_from_slice(b".PP\n");
        p.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            p.render_options_section(&mut part)?;
        }
        // The subcommand's parts go under its own heading: their headings
        // become subsections, the synopsis needs none.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some("SYNOPSIS") | Some("DESCRIPTION") => {}
                Some(h) => {
                    let h = h.trim_matches('"').to_lowercase();
                    let _ = writeln!(text, ".SS \"{}{}\"", h[..1].to_uppercase(), &h[1..]);
                }
                None => {
                    let _ = writeln!(text, "{line}");
                }
            }
        }
    }
    text.push_str(extra(name));
    Ok(text)
}

/// `text` as roff text: backslashes and hyphens escaped, no line taken for
/// a request.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// Words `xvsadm` takes besides ipvsadm's popt table: the fwmark commands
/// (the rest of their line is an iptables rule), and `--socket`/`--health`,
/// which xvsadm takes out before the grammar sees the line.
pub const XVSADM_EXTRA: &[(&str, bool)] = &[
    ("--add-mark", false),
    ("--del-mark", false),
    ("--list-marks", false),
    ("--health", false),
    ("--knob", true),
    ("--knobs", false),
    ("--sync-knob", true),
    ("--socket", true),
];

/// Values offered after the options that take one of a few words.
fn xvsadm_values(long: &str) -> Option<Vec<String>> {
    Some(match long {
        "scheduler" => xvs_core::service::SchedKind::ALL
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
        "sched-flags" => SCHED_FLAGS.iter().map(|s| s.to_string()).collect(),
        "start-daemon" | "stop-daemon" => vec!["master".into(), "backup".into()],
        // gue and gre are parsed, but refused by xvs.
        "tun-type" => vec!["ipip".into()],
        _ => return None,
    })
}

/// `-b` flags (checked against the parser by a test).
pub const SCHED_FLAGS: &[&str] = &[
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-fallback",
    "sh-port",
    "mh-fallback",
    "mh-port",
];

/// Every option word `xvsadm` accepts: `--long` and `-s` forms of the popt
/// table, then [`XVSADM_EXTRA`].
pub fn xvsadm_words() -> Vec<String> {
    let mut w = Vec::new();
    for o in cmdline::options() {
        let long = format!("--{}", o.long);
        if !w.contains(&long) {
            w.push(long);
        }
        if let Some(c) = o.short {
            w.push(format!("-{c}"));
        }
    }
    w.extend(XVSADM_EXTRA.iter().map(|(o, _)| o.to_string()));
    w
}

/// The completion script for `xvsadm`, `xvsadm-save` and `xvsadm-restore`
/// in `shell`.
pub fn xvsadm_completion(shell: &str) -> Result<String, String> {
    // Options whose value is a word from a list, and those that take any value.
    let mut valued: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for o in cmdline::options().filter(|o| o.arg != OptArg::None) {
        let vals = xvsadm_values(o.long);
        valued.push((format!("--{}", o.long), vals.clone()));
        if let Some(c) = o.short {
            valued.push((format!("-{c}"), vals));
        }
    }
    valued.extend(
        XVSADM_EXTRA
            .iter()
            .filter(|(_, v)| *v)
            .map(|(o, _)| (o.to_string(), None)),
    );
    let words = xvsadm_words().join(" ");
    match shell {
        "bash" => Ok(bash(&words, &valued)),
        "zsh" => Ok(zsh(&words, &valued)),
        other => Err(format!("`{other}': expected bash or zsh")),
    }
}

/// Options whose value is a host (completed from the known hosts).
fn takes_host(opt: &str) -> bool {
    matches!(
        opt,
        "-t" | "-u"
            | "-r"
            | "-z"
            | "--tcp-service"
            | "--udp-service"
            | "--sctp-service"
            | "--real-server"
            | "--laddr"
    )
}

fn bash(words: &str, valued: &[(String, Option<Vec<String>>)]) -> String {
    let mut cases = String::new();
    for (opt, vals) in valued {
        let action = match (opt.as_str(), vals) {
            ("--socket", _) => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
            (_, Some(v)) => format!("COMPREPLY=($(compgen -W '{}' -- \"$cur\"))", v.join(" ")),
            // Addresses, numbers, interfaces: nothing to offer but hosts.
            (o, None) if takes_host(o) => {
                "COMPREPLY=($(compgen -A hostname -- \"$cur\"))".to_string()
            }
            (_, None) => "COMPREPLY=()".to_string(),
        };
        let _ = writeln!(cases, "        {opt}) {action}; return ;;");
    }
    format!(
        "# bash completion for xvsadm, made from its option table (xvs {VERSION}).\n\
# (ipvsadm's own name keeps the completion bash-completion has for it.)\n\
_xvsadm() {{\n\
    local cur prev\n\
    cur=\"${{COMP_WORDS[COMP_CWORD]}}\"\n\
    prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
    case \"$prev\" in\n\
{cases}    esac\n\
    COMPREPLY=($(compgen -W '{words}' -- \"$cur\"))\n\
}}\n\
complete -F _xvsadm xvsadm xvsadm-save xvsadm-restore\n"
    )
}

fn zsh(words: &str, valued: &[(String, Option<Vec<String>>)]) -> String {
    let mut cases = String::new();
    for (opt, vals) in valued {
        let action = match (opt.as_str(), vals) {
            ("--socket", _) => "_files".to_string(),
            (_, Some(v)) => format!("compadd -- {}", v.join(" ")),
            (o, None) if takes_host(o) => "_hosts".to_string(),
            (_, None) => "_message value".to_string(),
        };
        let _ = writeln!(cases, "    {opt}) {action}; return ;;");
    }
    format!(
        "#compdef xvsadm xvsadm-save xvsadm-restore\n\
# zsh completion for xvsadm, made from its option table (xvs {VERSION}).\n\
local prev=${{words[CURRENT-1]}}\n\
case $prev in\n\
{cases}esac\n\
compadd -- {words}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(line: &str) -> bool {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        cmdline::parse(&argv).is_ok()
    }

    #[test]
    fn offered_values_are_accepted_by_the_parser() {
        for s in xvsadm_values("scheduler").unwrap() {
            assert!(parses(&format!("xvsadm -A -t 10.0.0.1:80 -s {s}")), "{s}");
        }
        for f in SCHED_FLAGS {
            let sched = f.split('-').next().filter(|s| *s != "flag").unwrap_or("rr");
            assert!(
                parses(&format!("xvsadm -A -t 10.0.0.1:80 -s {sched} -b {f}")),
                "{f}"
            );
        }
        for d in ["master", "backup"] {
            assert!(parses(&format!("xvsadm --start-daemon {d}")), "{d}");
        }
    }

    #[test]
    fn every_option_of_the_help_is_completed() {
        // The help text is written by hand; the completions come from the
        // table: any long option the help names must be among them, and
        // every extra word must be in the help.
        let help = cmdline::usage("xvsadm");
        let words = xvsadm_words();
        for w in help
            .lines()
            .filter(|l| !l.contains("-j MARK"))
            .flat_map(|l| {
                l.split(|c: char| c.is_whitespace() || c == '|' || c == '[' || c == ']')
                    .filter(|w| w.starts_with("--") && w.len() > 2)
            })
        {
            // xvsd's option, named in the text of --health.
            if w == "--keepalived-conf" {
                continue;
            }
            assert!(
                words.iter().any(|x| x == w),
                "{w} is in -h but not completed"
            );
        }
        for (w, _) in XVSADM_EXTRA {
            assert!(help.contains(w) || *w == "--socket", "{w} not in -h");
        }
        let bash = xvsadm_completion("bash").unwrap();
        assert!(bash.contains("--scheduler) COMPREPLY=($(compgen -W 'rr wrr"));
        assert!(bash.contains("complete -F _xvsadm xvsadm"));
        let zsh = xvsadm_completion("zsh").unwrap();
        assert!(zsh.starts_with("#compdef xvsadm"));
    }

    /// `word` as the written pages spell an option: bold, hyphens escaped.
    fn roff_option(word: &str) -> String {
        format!("\\fB{}\\fR", word.replace('-', "\\-"))
    }

    #[test]
    fn the_xvsadm_page_names_every_option() {
        let page = include_str!("../../../packaging/man/xvsadm.8");
        for w in xvsadm_words() {
            assert!(page.contains(&roff_option(&w)), "xvsadm(8) lacks {w}");
        }
        for s in xvs_core::service::SchedKind::ALL {
            assert!(
                page.contains(&format!("\\fB{}\\fR", s.name())),
                "xvsadm(8) lacks {s}"
            );
        }
    }

    #[test]
    fn the_config_page_names_every_key_of_the_example() {
        let page = include_str!("../../../packaging/man/xvsd.toml.5");
        let example = include_str!("../../../configs/xvsd.toml");
        for line in example.lines() {
            let l = line.trim_start_matches('#').trim();
            let key = if let Some(section) = l.strip_prefix('[') {
                section
                    .trim_end_matches(']')
                    .trim_matches(|c| c == '[' || c == ']')
            } else if let Some((k, _)) = l.split_once(" = ") {
                k
            } else {
                continue;
            };
            if key.is_empty() || key.contains(' ') {
                continue;
            }
            let want = if line
                .trim_start()
                .trim_start_matches('#')
                .trim()
                .starts_with('[')
            {
                format!("\"[{}\"", key.replace('-', "\\-"))
            } else {
                roff_option(key)
            };
            let bare = want.trim_matches('"');
            assert!(page.contains(bare), "xvsd.toml(5) lacks {key} ({want})");
        }
    }

    #[derive(clap::Parser)]
    #[command(about = "a test")]
    struct T {
        /// A flag.
        #[arg(long)]
        flag: bool,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Go up.
        Up {
            /// How far.
            #[arg(long)]
            far: u32,
        },
    }

    #[test]
    fn a_page_has_a_section_per_subcommand() {
        let page = render(<T as clap::CommandFactory>::command(), "xvs-lab", "man").unwrap();
        assert!(page.contains("\n.TH xvs-lab 1 "), "{page}");
        assert!(page.contains(".SH \"XVS-LAB UP\""), "{page}");
        assert!(page.contains(".SS \"Options\""), "{page}");
        assert!(page.contains("\\-\\-far"), "{page}");
        assert!(render(<T as clap::CommandFactory>::command(), "x", "fish").is_err());
    }
}
