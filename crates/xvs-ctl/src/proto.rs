//! Protocol messages and framing.

pub use crate::mark::MarkSpec;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::IpAddr;
use xvs_core::engine::{Rates, Totals};
use xvs_core::service::{DestSpec, ServiceKey, ServiceSpec};

/// Version of the protocol; a daemon refuses clients of another version.
/// 2: the connection listing is streamed in chunks ([`Response::Conns`]).
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest request frame.
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest reply frame.
pub const MAX_REPLY: usize = 16 << 20;

/// Sync daemon role (`--start-daemon master|backup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DaemonState {
    Master,
    Backup,
}

/// Settings of a sync daemon as `--daemon` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSpec {
    pub state: DaemonState,
    pub mcast_ifn: String,
    pub syncid: u8,
    pub sync_maxlen: u16,
    pub mcast_group: Option<IpAddr>,
    pub mcast_port: u16,
    pub mcast_ttl: u8,
}

/// One change to the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    AddService(ServiceSpec),
    EditService(ServiceSpec),
    DelService(ServiceKey),
    Clear,
    AddDest(ServiceKey, DestSpec),
    EditDest(ServiceKey, DestSpec),
    DelDest(ServiceKey, IpAddr, u16),
    /// Zero the counters of one service, or of all.
    Zero(Option<ServiceKey>),
    /// `--set tcp tcpfin udp` (0 keeps a value).
    SetTimeouts(u32, u32, u32),
    StartDaemon(DaemonSpec),
    StopDaemon(DaemonState),
    /// FULLNAT local address pool of a service (xvs extension).
    AddLaddr(ServiceKey, IpAddr),
    DelLaddr(ServiceKey, IpAddr),
    /// fwmark classification rules (xvs extension): append one, delete one,
    /// or replace them all (a config file's `[[mark]]` on load and SIGHUP).
    AddMark(MarkSpec),
    DelMark(MarkSpec),
    SetMarks(Vec<MarkSpec>),
    /// A connection-sync knob (xvs extension, `--sync-knob NAME=VALUE`): the
    /// kernel's `sync_*` sysctls and xvs's own sync settings.
    SetSyncKnob(String, u64),
    /// A DoS/behaviour knob (xvs extension, `--knob NAME=VALUE`): the
    /// kernel's `net.ipv4.vs.*` sysctls of [`crate::knobs::NAMES`].
    SetKnob(String, i64),
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello {
        version: u32,
    },
    Apply(Op),
    /// All or nothing: either every op applies or none does.
    Batch(Vec<Op>),
    /// All services, or one.
    ListServices(Option<ServiceKey>),
    /// Every connection and template: answered by a stream of
    /// [`Response::Conns`] frames, the last with `more: false`.
    ListConns,
    GetTimeouts,
    GetDaemons,
    GetLaddrs(Option<ServiceKey>),
    /// The fwmark classification rules, in order.
    GetMarks,
    /// Health checks of `--keepalived-conf`: every virtual server, or the
    /// one configuring this service (xvs extension, `-L --health`).
    GetHealth(Option<ServiceKey>),
    /// The sync daemons' counters and knobs (xvs extension, `-L --daemon --stats`).
    GetSyncStats,
    /// The DoS/behaviour knobs in force (xvs extension, `-L --knobs`).
    GetKnobs,
}

/// Counters, rates and state of a dest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestInfo {
    pub spec: DestSpec,
    pub activeconns: u32,
    pub inactconns: u32,
    pub persistconns: u32,
    pub stats: Totals,
    pub rates: Rates,
}

/// A service with its dests in kernel order (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub spec: ServiceSpec,
    pub stats: Totals,
    pub rates: Rates,
    pub dests: Vec<DestInfo>,
}

/// One connection or template as `-c` lists it. On the wire it is a JSON
/// array in field order, not an object: a listing may hold millions of them,
/// and the field names would be most of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// "TCP", "UDP", or "IP" (fwmark templates).
    pub proto: String,
    pub expire_secs: u32,
    pub state: String,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub template: bool,
}

/// [`ConnInfo`]'s wire form (serialising).
#[derive(Serialize)]
struct ConnRowRef<'a>(
    &'a str,
    u32,
    &'a str,
    IpAddr,
    u16,
    IpAddr,
    u16,
    IpAddr,
    u16,
    bool,
);

/// [`ConnInfo`]'s wire form (deserialising).
#[derive(Deserialize)]
struct ConnRow(
    String,
    u32,
    String,
    IpAddr,
    u16,
    IpAddr,
    u16,
    IpAddr,
    u16,
    bool,
);

impl Serialize for ConnInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ConnRowRef(
            &self.proto,
            self.expire_secs,
            &self.state,
            self.caddr,
            self.cport,
            self.vaddr,
            self.vport,
            self.daddr,
            self.dport,
            self.template,
        )
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ConnInfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ConnRow(proto, expire_secs, state, caddr, cport, vaddr, vport, daddr, dport, template) =
            ConnRow::deserialize(d)?;
        Ok(ConnInfo {
            proto,
            expire_secs,
            state,
            caddr,
            cport,
            vaddr,
            vport,
            daddr,
            dport,
            template,
        })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The message as ipvsadm prints it.
    pub message: String,
    /// In a batch, the index of the op that failed.
    pub index: Option<usize>,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        conn_tab_size: u32,
    },
    Ok,
    Error(ErrorReply),
    Services {
        conn_tab_size: u32,
        services: Vec<ServiceInfo>,
    },
    /// A chunk of the connection listing, in table order (as ipvsadm lists
    /// /proc's, unsorted); `more` says whether other chunks follow.
    Conns {
        conns: Vec<ConnInfo>,
        more: bool,
    },
    Timeouts(u32, u32, u32),
    Daemons(Vec<DaemonSpec>),
    Laddrs(Vec<(ServiceKey, Vec<IpAddr>)>),
    Marks(Vec<MarkSpec>),
    Health(Vec<crate::health::VsHealth>),
    /// Counters and knobs of connection sync, by name, in a fixed order.
    SyncStats(Vec<(String, u64)>),
    /// The DoS/behaviour knobs, by name, in [`crate::knobs::NAMES`] order.
    Knobs(Vec<(String, i64)>),
}

/// A framing or encoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("message of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(FrameError::TooLarge(n, max));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let req = Request::Apply(Op::SetTimeouts(1, 2, 3));
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let got: Request = read_frame(&mut buf.as_slice(), MAX_REQUEST)
            .unwrap()
            .unwrap();
        assert_eq!(got, req);
        assert!(matches!(
            read_frame::<Request>(&mut buf.as_slice(), 4),
            Err(FrameError::TooLarge(_, 4))
        ));
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{{{");
        assert!(matches!(
            read_frame::<Request>(&mut bad.as_slice(), MAX_REQUEST),
            Err(FrameError::Json(_))
        ));
        assert!(read_frame::<Request>(&mut [].as_slice(), MAX_REQUEST)
            .unwrap()
            .is_none());
    }

    #[test]
    fn connections_travel_as_arrays() {
        let c = ConnInfo {
            proto: "TCP".into(),
            expire_secs: 899,
            state: "ESTABLISHED".into(),
            caddr: "10.77.0.2".parse().unwrap(),
            cport: 40000,
            vaddr: "fd77::100".parse().unwrap(),
            vport: 80,
            daddr: "10.77.1.11".parse().unwrap(),
            dport: 8080,
            template: false,
        };
        let r = Response::Conns {
            conns: vec![c],
            more: true,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"Conns":{"conns":[["TCP",899,"ESTABLISHED","10.77.0.2",40000,"fd77::100",80,"10.77.1.11",8080,false]],"more":true}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), r);
    }
}
