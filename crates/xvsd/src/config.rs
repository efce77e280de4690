//! The daemon's configuration file (TOML).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use xvs_core::conn::MAX_TIMEOUT;
use xvs_core::conn::{TcpState, Timeouts};
use xvs_core::engine::{Knobs, MarkRule};
use xvs_core::sched::TableOrder;

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
    /// Scheduler settings the kernel takes from Kconfig or its build.
    #[serde(default)]
    pub sched: Option<SchedConfig>,
    /// fwmark classification rules.
    #[serde(default, rename = "mark")]
    pub marks: Vec<MarkRule>,
    /// Connection timeouts per TCP state and for UDP (seconds), beyond the
    /// three `xvsadm --set` reaches. Applied at start.
    pub timeouts: Option<TimeoutConfig>,
    /// Connection sync: the kernel's `sync_*` sysctls and xvs's settings.
    #[serde(default)]
    pub sync: Option<crate::sync::SyncConfig>,
}

/// `[sched]`: how the table schedulers are built.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchedConfig {
    /// The order sh, dh and mh fill their tables in: "address" (xvs's
    /// default: every director with the same dests builds the same table,
    /// whatever order they were added in; what ECMP needs) or "list" (the
    /// kernel's list order, newest dest first).
    #[serde(default)]
    pub table_order: TableOrder,
    /// The mh scheduler's lookup table size: one of the primes the kernel
    /// offers (`CONFIG_IP_VS_MH_TAB_INDEX` 8..17, 251 to 131071), 4093 as
    /// the kernel's default build. A service has at most this many real
    /// servers; a larger table spreads clients closer to the weights.
    #[serde(default = "default_mh_table_size", deserialize_with = "mh_table_size")]
    pub mh_table_size: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            table_order: TableOrder::default(),
            mh_table_size: default_mh_table_size(),
        }
    }
}

fn default_mh_table_size() -> u32 {
    xvs_core::sched::mh::DEFAULT_TABLE_SIZE
}

/// Refused in the deserializer, so that the error carries the value's line.
fn mh_table_size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    let v = u64::deserialize(d)?;
    let primes = &xvs_core::sched::mh::PRIMES;
    match u32::try_from(v) {
        Ok(v) if primes.contains(&v) => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "mh_table_size must be one of the kernel's table sizes {}, not {v}",
            primes.map(|p| p.to_string()).join(", ")
        ))),
    }
}

/// `[timeouts]`: the kernel's per-state TCP timeouts (which ipvsadm cannot
/// set) and UDP's, in seconds; a key left out keeps the kernel's default.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    pub none: Option<u32>,
    pub established: Option<u32>,
    pub syn_sent: Option<u32>,
    pub syn_recv: Option<u32>,
    pub fin_wait: Option<u32>,
    pub time_wait: Option<u32>,
    pub close: Option<u32>,
    pub close_wait: Option<u32>,
    pub last_ack: Option<u32>,
    pub listen: Option<u32>,
    pub synack: Option<u32>,
    pub udp: Option<u32>,
}

impl TimeoutConfig {
    /// (key, TCP state or None for UDP, value) of each key given.
    fn entries(&self) -> impl Iterator<Item = (&'static str, Option<TcpState>, u32)> {
        use TcpState::*;
        [
            ("none", Some(None), self.none),
            ("established", Some(Established), self.established),
            ("syn_sent", Some(SynSent), self.syn_sent),
            ("syn_recv", Some(SynRecv), self.syn_recv),
            ("fin_wait", Some(FinWait), self.fin_wait),
            ("time_wait", Some(TimeWait), self.time_wait),
            ("close", Some(Close), self.close),
            ("close_wait", Some(CloseWait), self.close_wait),
            ("last_ack", Some(LastAck), self.last_ack),
            ("listen", Some(Listen), self.listen),
            ("synack", Some(SynAck), self.synack),
            ("udp", Option::None, self.udp),
        ]
        .into_iter()
        .filter_map(|(k, s, v)| v.map(|v| (k, s, v)))
    }

    /// `base` with the given keys replaced.
    pub fn apply(&self, mut base: Timeouts) -> Timeouts {
        for (_, state, v) in self.entries() {
            match state {
                Some(s) => base.tcp[s as usize] = v,
                None => base.udp = v,
            }
        }
        base
    }
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub socket: Option<PathBuf>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the `n`-th (0-based) `[[mark]]` header of `text`, if found.
fn mark_line(text: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[mark]]"))
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// The line of `key = ...` in table `[section]` of `text`, if found.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.starts_with('[') {
            inside = l.trim_end().split('#').next().map(str::trim) == Some(&format!("[{section}]"));
        } else if inside
            && l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

impl Config {
    /// Reads and checks the file. Errors name `file:line` where the file
    /// says where (a syntax error, an unknown key, a bad `[[mark]]` rule), so
    /// an operator whose SIGHUP was refused finds the line in the log.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let c: Config = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
            anyhow::anyhow!("{}:{at}: {}", path.display(), e.message().trim_end())
        })?;
        for (i, m) in c.marks.iter().enumerate() {
            if let Err(e) = xvs_ctl::MarkSpec::from_rule(m).check() {
                let at = mark_line(&text, i).unwrap_or(1);
                bail!("{}:{at}: [[mark]] rule {}: {e}", path.display(), i + 1);
            }
        }
        if let Some(k) = &c.knobs {
            if let Err((key, e)) = xvs_ctl::knobs::validate(k) {
                let at = key_line(&text, "knobs", key).unwrap_or(1);
                bail!("{}:{at}: [knobs] {e}", path.display());
            }
        }
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
        if let Some(t) = &self.timeouts {
            for (k, _, v) in t.entries() {
                if v == 0 || v > MAX_TIMEOUT {
                    bail!("[timeouts] {k} must be 1..={MAX_TIMEOUT} seconds, not {v}");
                }
            }
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

    /// Errors name the file and line: a syntax error, an unknown key, and a
    /// `[[mark]]` rule that parses but is wrong (the line of its header).
    #[test]
    fn errors_say_file_and_line() {
        let dir = std::env::temp_dir().join(format!("xvsd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        let mark = "[[mark]]\naddr = \"10.77.0.1\"\nprefix_len = 32\nmark = 1\n";
        for (text, want) in [
            (format!("{mark}\n[[mark]]\naddr = 10.77.0.1\n"), ":7: "),
            (format!("conn_max = 5\n{mark}bogus = 1\n"), ":6: "),
            (
                format!("{mark}[[mark]]\naddr = \"10.77.0.1\"\nprefix_len = 40\nmark = 2\n"),
                ":5: [[mark]] rule 2: ",
            ),
        ] {
            std::fs::write(&p, &text).unwrap();
            let e = format!("{:#}", Config::load(&p).unwrap_err());
            assert!(e.starts_with(&format!("{}{want}", p.display())), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `[knobs]` takes what the kernel's sysctl handlers take; a value the
    /// types let through but the kernel would refuse names its line.
    #[test]
    fn knobs_out_of_range_say_file_and_line() {
        let dir = std::env::temp_dir().join(format!("xvsd-config-knobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        let text = "[sched]\ndrop_entry = 1\n\n[knobs]\nsloppy_tcp = true\n  drop_entry= 4 # no\n";
        assert!(
            toml::from_str::<Config>(text).is_err(),
            "drop_entry is not a [sched] key"
        );
        let text = "[knobs]\nsloppy_tcp = true\n\n  drop_entry= 4 # no\n";
        std::fs::write(&p, text).unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}:4: [knobs] Invalid argument: drop_entry takes 0 to 3, not 4",
                p.display()
            )
        );
        std::fs::write(&p, "[knobs]\namemthresh = 3000000000\n").unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(
            e.starts_with(&format!("{}:2: [knobs] ", p.display())),
            "{e}"
        );
        std::fs::write(&p, "[knobs]\nsecure_tcp = 3\ndrop_packet = 2\n").unwrap();
        let k = Config::load(&p).unwrap().knobs.unwrap();
        assert_eq!((k.secure_tcp, k.drop_packet), (3, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timeouts_replace_the_keys_given() {
        let c: Config = toml::from_str("[timeouts]\nsyn_recv = 5\nudp = 30\nsynack = 7").unwrap();
        c.validate().unwrap();
        let t = c.timeouts.unwrap().apply(Timeouts::default());
        assert_eq!(t.tcp_state(TcpState::SynRecv), 5);
        assert_eq!(t.tcp_state(TcpState::SynAck), 7);
        assert_eq!(t.udp, 30);
        assert_eq!(t.tcp_state(TcpState::Established), 900, "kept");
        let zero: Config = toml::from_str("[timeouts]\nclose = 0").unwrap();
        assert!(zero.validate().is_err());
        assert!(toml::from_str::<Config>("[timeouts]\nsyn_rcvd = 5").is_err());
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
        let partial: Config = toml::from_str("[knobs]\ndrop_entry = 3").unwrap();
        assert_eq!(partial.knobs.unwrap().drop_entry, 3);
        assert!(toml::from_str::<Config>("[knobs]\nsloppy = true").is_err());
        assert_eq!(c.sched.unwrap_or_default().table_order, TableOrder::Address);
        let list: Config = toml::from_str("[sched]\ntable_order = \"list\"").unwrap();
        assert_eq!(list.sched.unwrap().table_order, TableOrder::List);
        assert!(toml::from_str::<Config>("[sched]\ntable_order = \"kernel\"").is_err());
        assert_eq!(c.sched.unwrap_or_default().mh_table_size, 4093);
    }

    /// `[sched] mh_table_size` takes the kernel's primes only, and a wrong
    /// one is refused with the file and the line of the value.
    #[test]
    fn mh_table_size_is_one_of_the_kernels_primes() {
        assert_eq!(SchedConfig::default().mh_table_size, 4093);
        let c: Config = toml::from_str("[sched]\ntable_order = \"list\"").unwrap();
        assert_eq!(c.sched.unwrap().mh_table_size, 4093, "default when absent");
        for p in xvs_core::sched::mh::PRIMES {
            let c: Config = toml::from_str(&format!("[sched]\nmh_table_size = {p}")).unwrap();
            assert_eq!(c.sched.unwrap().mh_table_size, p);
        }
        let dir = std::env::temp_dir().join(format!("xvsd-config-mh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        for bad in [
            "4096",
            "65537",
            "0",
            "-1",
            "131072",
            "4294967296",
            "\"4093\"",
        ] {
            std::fs::write(
                &p,
                format!("conn_max = 5\n\n[sched]\nmh_table_size = {bad}\n"),
            )
            .unwrap();
            let e = format!("{:#}", Config::load(&p).unwrap_err());
            assert!(e.starts_with(&format!("{}:4: ", p.display())), "{bad}: {e}");
            if bad.parse::<u64>().is_ok() {
                assert!(
                    e.contains("one of the kernel's table sizes 251, 509,")
                        && e.contains("131071, not "),
                    "{e}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
