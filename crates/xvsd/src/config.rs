//! The daemon's configuration file (TOML).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use xvs_core::engine::{Knobs, MarkRule};

/// `[[interface]]`: a data interface.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// "client", "server" or "both" (one-arm); informative: replies and
    /// requests are told apart by the connection table, not by the interface.
    #[serde(default = "default_role")]
    pub role: String,
    /// RX queues to serve, from queue 0 (default: every RX queue of the
    /// device). Fewer than the device has leaves the others to the kernel,
    /// which xvsd logs.
    pub queues: Option<u32>,
}

fn default_role() -> String {
    "both".into()
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub control: Control,
    /// Maximum connections + templates (default 1M).
    pub conn_max: Option<u32>,
    /// Busy-poll instead of sleeping in poll() (only on dedicated cores).
    #[serde(default)]
    pub busy_poll: bool,
    /// Data-path backend: "auto", "xdp-native", "xdp-generic" or "af-packet".
    pub backend: Option<String>,
    /// Address for Prometheus metrics, e.g. "127.0.0.1:9101".
    pub metrics: Option<String>,
    /// Room in the steering map, in keys (default 65536): a VIP:port takes
    /// two, a NAT real server two, a FULLNAT local address or one of the
    /// host's own addresses one. A rule change that would overflow it is
    /// refused.
    pub steer_keys: Option<u32>,
    /// Worker cores, in queue order (default: no pinning).
    #[serde(default)]
    pub cores: Vec<usize>,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<Interface>,
    /// Kernel sysctl equivalents.
    #[serde(default)]
    pub knobs: Option<Knobs>,
    /// fwmark classification rules.
    #[serde(default, rename = "mark")]
    pub marks: Vec<MarkRule>,
    /// Connection sync: the kernel's `sync_*` sysctls and xvs's settings.
    #[serde(default)]
    pub sync: Option<crate::sync::SyncConfig>,
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub socket: Option<PathBuf>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let c: Config =
            toml::from_str(&text).with_context(|| format!("in config {}", path.display()))?;
        c.validate()
            .with_context(|| format!("in config {}", path.display()))?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        for i in &self.interfaces {
            if i.name.is_empty() || i.name.len() > 15 {
                bail!("interface name `{}` is not a valid interface name", i.name);
            }
            if !matches!(i.role.as_str(), "client" | "server" | "both") {
                bail!("interface {}: role must be client, server or both", i.name);
            }
            if i.queues.is_some_and(|q| q == 0 || q > 256) {
                bail!("interface {}: queues must be 1..=256", i.name);
            }
        }
        if let Some(b) = &self.backend {
            if !matches!(
                b.as_str(),
                "auto" | "xdp-native" | "xdp-generic" | "af-packet"
            ) {
                bail!("backend must be auto, xdp-native, xdp-generic or af-packet");
            }
        }
        if self.steer_keys == Some(0) {
            bail!("steer_keys must be at least 1");
        }
        if self.conn_max == Some(0) {
            bail!("conn_max must be at least 1");
        }
        if let Some(s) = &self.sync {
            s.validate().context("in [sync]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c: Config = toml::from_str(
            r#"
            conn_max = 100000
            metrics = "127.0.0.1:9101"
            [control]
            socket = "/tmp/x.sock"
            [[interface]]
            name = "veth0"
            role = "client"
            [[interface]]
            name = "veth1"
            queues = 2
            [[mark]]
            addr = "10.77.0.0"
            prefix_len = 24
            ports = [80, 90]
            mark = 5
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.interfaces[1].role, "both");
        assert_eq!(c.marks[0].mark, 5);
        let bad: Config = toml::from_str("[[interface]]\nname = \"x\"\nrole = \"up\"").unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    /// The example shipped in configs/ stays loadable and means what it says.
    #[test]
    fn shipped_example_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/xvsd.toml");
        let c = Config::load(&p).unwrap();
        assert_eq!(c.conn_max, Some(1 << 20));
        assert_eq!(c.interfaces.len(), 1);
        assert_eq!(c.knobs, Some(Knobs::default()));
        assert_eq!(c.sync, Some(crate::sync::SyncConfig::default()));
        let partial: Config = toml::from_str("[sync]\nsync_period = 0").unwrap();
        assert_eq!(partial.sync.unwrap().sync_period, 0);
        assert!(toml::from_str::<Config>("[sync]\nsync_perid = 0").is_err());
        let bad: Config = toml::from_str("[sync]\nsync_threshold = 60").unwrap();
        assert!(bad.validate().is_err(), "threshold not below period");
        let partial: Config = toml::from_str("[knobs]\nsloppy_tcp = true").unwrap();
        assert!(partial.knobs.unwrap().sloppy_tcp);
        assert!(toml::from_str::<Config>("[knobs]\nsloppy = true").is_err());
    }
}
