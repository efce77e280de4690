//! ipvsadm's legality matrix (`commands_v_options`): which options each
//! command requires, allows or refuses, with ipvsadm's messages.

use super::command::{fail, CmdError};
use super::popt::Cmd;

/// The commands' names in ipvsadm's messages, by [`Cmd`].
const CMD_NAMES: [&str; 17] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
    "add-laddr",
    "del-laddr",
    "get-laddr",
];

// Option indexes (ipvsadm's OPTC_*), then xvs's.
pub(super) const O_NUMERIC: usize = 0;
pub(super) const O_CONNECTION: usize = 1;
pub(super) const O_SERVICE: usize = 2;
pub(super) const O_SCHEDULER: usize = 3;
pub(super) const O_PERSISTENT: usize = 4;
pub(super) const O_NETMASK: usize = 5;
pub(super) const O_SERVER: usize = 6;
pub(super) const O_FORWARD: usize = 7;
pub(super) const O_WEIGHT: usize = 8;
pub(super) const O_UTHRESHOLD: usize = 9;
pub(super) const O_LTHRESHOLD: usize = 10;
pub(super) const O_MCAST: usize = 11;
pub(super) const O_TIMEOUT: usize = 12;
pub(super) const O_DAEMON: usize = 13;
pub(super) const O_STATS: usize = 14;
pub(super) const O_RATE: usize = 15;
pub(super) const O_THRESHOLDS: usize = 16;
pub(super) const O_PERSISTENTCONN: usize = 17;
pub(super) const O_NOSORT: usize = 18;
pub(super) const O_SYNCID: usize = 19;
pub(super) const O_EXACT: usize = 20;
pub(super) const O_ONEPACKET: usize = 21;
pub(super) const O_PE: usize = 22;
pub(super) const O_SCHED_FLAGS: usize = 23;
pub(super) const O_MCAST_GROUP: usize = 24;
pub(super) const O_MCAST_PORT: usize = 25;
pub(super) const O_MCAST_TTL: usize = 26;
pub(super) const O_SYNC_MAXLEN: usize = 27;
pub(super) const O_TUN_INFO: usize = 28;
pub(super) const O_TUN_TYPE: usize = 29;
pub(super) const O_TUN_PORT: usize = 30;
pub(super) const O_TUN_NOCSUM: usize = 31;
pub(super) const O_TUN_CSUM: usize = 32;
pub(super) const O_TUN_REMCSUM: usize = 33;
pub(super) const O_LADDR: usize = 34;
pub(super) const N_OPT: usize = 35;

/// The options' names in ipvsadm's messages, by index.
const OPT_NAMES: [&str; N_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
    "laddr",
];

/// ipvsadm's commands_v_options table (+ required, x illegal, 1 one of), with a
/// column for xvs's `-z` and rows for the laddr commands.
const LEGAL: [&[u8; N_OPT]; 17] = [
    //-n -c svc -s -p -M -r fwd -w -x -y mc tot dmn st rt thr pc srt sid ex ops pe -b grp prt ttl sz tinf ttyp tprt nocs csum remc -z
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx",
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" 11xxxxxxxxx11       xxxxxxx xxxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x",
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxxx",
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+",
    b" x xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// ipvsadm's set_option: records option `opt` in `options`, once.
pub(super) fn set_option(options: &mut u64, opt: usize) -> Result<(), CmdError> {
    let bit = 1u64 << opt;
    if *options & bit != 0 {
        return fail(format!("multiple '{}' options specified", OPT_NAMES[opt]));
    }
    *options |= bit;
    Ok(())
}

/// ipvsadm's generic_opt_check: every option given is legal for `cmd`, every
/// required one is there, and at most one of a `1` group.
pub(super) fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), CmdError> {
    let i = cmd as usize;
    let row = LEGAL[i];
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        let set = options & (1 << j) != 0;
        if !set {
            if rule == b'+' {
                return fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                ));
            }
        } else {
            if rule == b'x' {
                return fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                ));
            }
            if rule == b'1' {
                match last {
                    None => last = Some(j),
                    Some(l) => {
                        return fail(format!(
                            "The option '{}' conflicts with the '{}' option in the '{}' command",
                            OPT_NAMES[j], OPT_NAMES[l], CMD_NAMES[i]
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}
