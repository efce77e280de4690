//! What a command line means: the [`Command`] it parses to (and the rule
//! change it makes, [`Command::to_op`]), or the [`CmdError`] ipvsadm would
//! print for it.

use crate::proto::{DaemonSpec, DaemonState};
use std::net::IpAddr;
use xvs_core::service::{DestSpec, ServiceKey, ServiceSpec};

/// Listing formats (ipvsadm's FMT_* bits).
pub mod fmt {
    pub const NUMERIC: u32 = 0x0001;
    pub const RULE: u32 = 0x0002;
    pub const STATS: u32 = 0x0004;
    pub const RATE: u32 = 0x0008;
    pub const THRESHOLDS: u32 = 0x0010;
    pub const PERSISTENTCONN: u32 = 0x0020;
    pub const NOSORT: u32 = 0x0040;
    pub const EXACT: u32 = 0x0080;
    pub const TUN_INFO: u32 = 0x0100;
}

/// What `-L` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListWhat {
    All,
    Service(ServiceKey),
    Conns,
    Timeout,
    Daemon,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    AddService(ServiceSpec),
    EditService(ServiceSpec),
    DelService(ServiceKey),
    Clear,
    Restore,
    Save {
        format: u32,
    },
    AddDest(ServiceKey, DestSpec),
    EditDest(ServiceKey, DestSpec),
    DelDest(ServiceKey, IpAddr, u16),
    List {
        what: ListWhat,
        format: u32,
    },
    Zero(Option<ServiceKey>),
    SetTimeouts(u32, u32, u32),
    StartDaemon(DaemonSpec),
    StopDaemon(DaemonState),
    Help,
    Version,
    AddLaddr(ServiceKey, IpAddr),
    DelLaddr(ServiceKey, IpAddr),
    GetLaddr(Option<ServiceKey>),
    /// `--add-mark RULE`, `--del-mark RULE`, `--list-marks` (xvs extensions).
    AddMark(crate::mark::MarkSpec),
    DelMark(crate::mark::MarkSpec),
    ListMarks,
}

/// A command line ipvsadm would refuse: the text it prints on stderr (without
/// the final newline) and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub message: String,
    pub exit: i32,
}

pub(super) fn fail<T>(msg: impl Into<String>) -> Result<T, CmdError> {
    Err(CmdError {
        message: msg.into(),
        exit: 2,
    })
}

pub(super) fn tryhelp<T>(program: &str) -> Result<T, CmdError> {
    Err(CmdError {
        message: format!("Try `{program} -h' or '{program} --help' for more information."),
        exit: 255,
    })
}

impl Command {
    /// The rule change this command makes, if it is one.
    pub fn to_op(&self) -> Option<crate::proto::Op> {
        use crate::proto::Op;
        Some(match self {
            Command::AddService(s) => Op::AddService(s.clone()),
            Command::EditService(s) => Op::EditService(s.clone()),
            Command::DelService(k) => Op::DelService(*k),
            Command::Clear => Op::Clear,
            Command::AddDest(k, d) => Op::AddDest(*k, d.clone()),
            Command::EditDest(k, d) => Op::EditDest(*k, d.clone()),
            Command::DelDest(k, a, p) => Op::DelDest(*k, *a, *p),
            Command::Zero(k) => Op::Zero(*k),
            Command::SetTimeouts(a, b, c) => Op::SetTimeouts(*a, *b, *c),
            Command::StartDaemon(d) => Op::StartDaemon(d.clone()),
            Command::StopDaemon(s) => Op::StopDaemon(*s),
            Command::AddLaddr(k, a) => Op::AddLaddr(*k, *a),
            Command::DelLaddr(k, a) => Op::DelLaddr(*k, *a),
            Command::AddMark(m) => Op::AddMark(m.clone()),
            Command::DelMark(m) => Op::DelMark(m.clone()),
            _ => return None,
        })
    }
}
