//! What `xvsadm -L --health` shows: the state of xvsd's health checks
//! (virtual servers of `--keepalived-conf`, their real servers, each checker
//! and its last result).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use xvs_core::service::ServiceKey;

/// One `virtual_server` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsHealth {
    /// keepalived's name for it (`[10.0.0.1]:tcp:80`, `FWM 5`, `group web`).
    pub name: String,
    /// The xvs services it configures.
    pub services: Vec<ServiceKey>,
    pub quorum: u32,
    pub hysteresis: u32,
    /// Total weight of the real servers whose checks pass.
    pub alive_weight: u64,
    pub quorum_up: bool,
    /// ha_suspend: the checkers wait while no VIP is on this host.
    pub suspended: bool,
    pub sorry: Option<SorryHealth>,
    pub real_servers: Vec<RsHealth>,
}

/// The sorry server and whether it is in use (quorum lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SorryHealth {
    pub addr: IpAddr,
    pub port: u16,
    pub in_use: bool,
}

/// A real server: alive when every checker of it passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsHealth {
    pub addr: IpAddr,
    pub port: u16,
    pub alive: bool,
    /// The weight it has when in the pool (configured, or set by misc_dynamic).
    pub weight: i32,
    /// The weight xvsd gave it in the table; None when it was taken out.
    pub listed: Option<i32>,
    /// Milliseconds since it last changed between alive and not.
    pub since_ms: u64,
    pub checks: Vec<CheckHealth>,
}

/// One checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckHealth {
    /// TCP_CHECK, HTTP_GET, ...
    pub kind: String,
    /// What it connects to (`10.0.0.11:80`) or runs.
    pub target: String,
    pub up: bool,
    /// Failures counted towards `retry` since the last success.
    pub failing: u32,
    pub successes: u64,
    pub failures: u64,
    pub last: Option<CheckResult>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub ok: bool,
    /// What happened (`HTTP 200`, `connection refused`, `exit status 1`).
    pub reason: String,
    pub latency_us: u64,
    /// Milliseconds since it ended.
    pub age_ms: u64,
}
