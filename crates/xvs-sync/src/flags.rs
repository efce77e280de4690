//! The kernel's connection flags (`IP_VS_CONN_F_*`), state numbers and the
//! protocols a backup accepts, with the values of `include/uapi/linux/ip_vs.h`
//! and `include/net/ip_vs.h`.
//!
//! Flags stay the kernel's bits in a `u32` newtype: they cross the wire as
//! they are (version 1: 32 bits, version 0: the low 16), so any translation
//! would be a chance to lose one.

use std::fmt;

/// `IP_VS_CONN_F_*` bits, as the kernel numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnFlags(pub u32);

impl ConnFlags {
    /// Mask of the forwarding method (the low three bits hold a number, not bits).
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    /// Entry created by sync (set by the backup on every synced entry).
    pub const SYNC: u32 = 0x0020;
    /// Hashed in the conn table: never sent (the master masks it off).
    pub const HASHED: u32 = 0x0040;
    /// No output packets expected (every non-NAT forwarding method).
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not established: counted in the dest's inactive connections.
    pub const INACTIVE: u32 = 0x0100;
    pub const OUT_SEQ: u32 = 0x0200;
    pub const IN_SEQ: u32 = 0x0400;
    /// Either sequence adjustment: the record then carries SEQ_DATA.
    pub const SEQ_MASK: u32 = 0x0600;
    /// Client port not known yet (FTP data templates).
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling (`-o`): never synced.
    pub const ONE_PACKET: u32 = 0x2000;
    /// Bits a backup takes from a version 1 record (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = Self::FWD_MASK
        | Self::NOOUTPUT
        | Self::INACTIVE
        | Self::SEQ_MASK
        | Self::NO_CPORT
        | Self::TEMPLATE;
    /// Bits a backup changes on an entry it already has (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = Self::INACTIVE | Self::SEQ_MASK;
    /// Use netfilter conntrack: from bit 16 on, flags are never sent.
    pub const NFCT: u32 = 1 << 16;

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    pub const fn intersects(self, bits: u32) -> bool {
        self.0 & bits != 0
    }

    pub const fn with(self, bits: u32) -> Self {
        Self(self.0 | bits)
    }

    pub const fn without(self, bits: u32) -> Self {
        Self(self.0 & !bits)
    }

    /// The forwarding method, or `None` for the values 5..7 no kernel assigns.
    pub const fn fwd(self) -> Option<FwdMethod> {
        FwdMethod::from_bits(self.0 & Self::FWD_MASK)
    }

    /// These flags with the forwarding method replaced.
    pub const fn with_fwd(self, fwd: FwdMethod) -> Self {
        Self((self.0 & !Self::FWD_MASK) | fwd as u32)
    }

    pub const fn is_template(self) -> bool {
        self.intersects(Self::TEMPLATE)
    }

    pub const fn is_nooutput(self) -> bool {
        self.intersects(Self::NOOUTPUT)
    }

    pub const fn is_inactive(self) -> bool {
        self.intersects(Self::INACTIVE)
    }

    pub const fn is_one_packet(self) -> bool {
        self.intersects(Self::ONE_PACKET)
    }

    pub const fn is_sync(self) -> bool {
        self.intersects(Self::SYNC)
    }

    pub const fn has_no_cport(self) -> bool {
        self.intersects(Self::NO_CPORT)
    }

    /// True when the record carries sequence adjustments (IN_SEQ or OUT_SEQ).
    pub const fn has_seq(self) -> bool {
        self.intersects(Self::SEQ_MASK)
    }

    /// What a master puts on the wire: everything but HASHED
    /// (`cp->flags & ~IP_VS_CONN_F_HASHED` in `ip_vs_sync_conn`).
    pub const fn sent(self) -> Self {
        self.without(Self::HASHED)
    }

    /// What a backup keeps from a version 1 record: `BACKUP_MASK`, plus SYNC.
    pub const fn backup_v1(self) -> Self {
        Self((self.0 & Self::BACKUP_MASK) | Self::SYNC)
    }

    /// What a backup keeps from a version 0 record: all 16 bits but HASHED,
    /// plus SYNC (`ip_vs_process_message_v0` applies no BACKUP_MASK).
    pub const fn backup_v0(self) -> Self {
        Self(((self.0 & 0xffff) | Self::SYNC) & !Self::HASHED)
    }

    /// The flags an existing backup entry ends up with when a record updates
    /// it: only INACTIVE and the SEQ bits come from the record.
    pub const fn backup_update(existing: Self, received: Self) -> Self {
        Self((received.0 & Self::BACKUP_UPD_MASK) | (existing.0 & !Self::BACKUP_UPD_MASK))
    }
}

impl fmt::Debug for ConnFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnFlags({:#06x}", self.0)?;
        match self.fwd() {
            Some(m) => write!(f, " {m:?}")?,
            None => write!(f, " fwd={}", self.0 & Self::FWD_MASK)?,
        }
        for (bit, name) in [
            (Self::SYNC, "SYNC"),
            (Self::HASHED, "HASHED"),
            (Self::NOOUTPUT, "NOOUTPUT"),
            (Self::INACTIVE, "INACTIVE"),
            (Self::OUT_SEQ, "OUT_SEQ"),
            (Self::IN_SEQ, "IN_SEQ"),
            (Self::NO_CPORT, "NO_CPORT"),
            (Self::TEMPLATE, "TEMPLATE"),
            (Self::ONE_PACKET, "ONE_PACKET"),
            (Self::NFCT, "NFCT"),
        ] {
            if self.0 & bit != 0 {
                write!(f, "|{name}")?;
            }
        }
        f.write_str(")")
    }
}

/// Forwarding method, the value of `flags & IP_VS_CONN_F_FWD_MASK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FwdMethod {
    Masq = 0,
    LocalNode = 1,
    Tunnel = 2,
    DirectRoute = 3,
    Bypass = 4,
}

impl FwdMethod {
    pub const fn from_bits(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Masq),
            1 => Some(Self::LocalNode),
            2 => Some(Self::Tunnel),
            3 => Some(Self::DirectRoute),
            4 => Some(Self::Bypass),
            _ => None,
        }
    }
}

/// IP protocol numbers the kernel's IPVS registers.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const SCTP: u8 = 132;
}

/// TCP states, the kernel's `IP_VS_TCP_S_*` numbering.
pub mod tcp_state {
    pub const NONE: u16 = 0;
    pub const ESTABLISHED: u16 = 1;
    pub const SYN_SENT: u16 = 2;
    pub const SYN_RECV: u16 = 3;
    pub const FIN_WAIT: u16 = 4;
    pub const TIME_WAIT: u16 = 5;
    pub const CLOSE: u16 = 6;
    pub const CLOSE_WAIT: u16 = 7;
    pub const LAST_ACK: u16 = 8;
    pub const LISTEN: u16 = 9;
    pub const SYNACK: u16 = 10;
    /// `IP_VS_TCP_S_LAST`: the number of TCP states.
    pub const LAST: u16 = 11;
}

/// SCTP states, `enum ip_vs_sctp_states`.
pub mod sctp_state {
    pub const NONE: u16 = 0;
    pub const INIT1: u16 = 1;
    pub const INIT: u16 = 2;
    pub const COOKIE_SENT: u16 = 3;
    pub const COOKIE_REPLIED: u16 = 4;
    pub const COOKIE_WAIT: u16 = 5;
    pub const COOKIE: u16 = 6;
    pub const COOKIE_ECHOED: u16 = 7;
    pub const ESTABLISHED: u16 = 8;
    pub const SHUTDOWN_SENT: u16 = 9;
    pub const SHUTDOWN_RECEIVED: u16 = 10;
    pub const SHUTDOWN_ACK_SENT: u16 = 11;
    pub const REJECTED: u16 = 12;
    pub const CLOSED: u16 = 13;
    /// `IP_VS_SCTP_S_LAST`.
    pub const LAST: u16 = 14;
}

/// UDP's single state (`IP_VS_UDP_S_NORMAL`).
pub const UDP_S_NORMAL: u16 = 0;

/// Template states (`IP_VS_CTPL_S_*`): templates use the state field for these.
pub mod tpl_state {
    pub const NONE: u16 = 0;
    pub const ASSURED: u16 = 1;
    /// `IP_VS_CTPL_S_LAST`: a backup drops templates at or above it.
    pub const LAST: u16 = 2;
}

/// Number of states of a protocol the kernel registers (`pp->num_states`),
/// `None` for one `ip_vs_proto_get()` does not know. A backup drops a
/// connection record whose protocol is unknown or whose state is not below
/// this. The set is a kernel built with every `CONFIG_IP_VS_PROTO_*`.
pub const fn proto_num_states(protocol: u8) -> Option<u16> {
    match protocol {
        proto::TCP => Some(tcp_state::LAST),
        proto::UDP => Some(1),
        proto::SCTP => Some(sctp_state::LAST),
        proto::AH | proto::ESP => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_the_kernels() {
        // Values spelled out in include/uapi/linux/ip_vs.h.
        assert_eq!(ConnFlags::BACKUP_MASK, 0x1f87);
        assert_eq!(ConnFlags::BACKUP_UPD_MASK, 0x0700);
        assert_eq!(ConnFlags::SEQ_MASK, ConnFlags::IN_SEQ | ConnFlags::OUT_SEQ);
    }

    #[test]
    fn fwd_round_trips_and_rejects_unassigned() {
        for m in [
            FwdMethod::Masq,
            FwdMethod::LocalNode,
            FwdMethod::Tunnel,
            FwdMethod::DirectRoute,
            FwdMethod::Bypass,
        ] {
            let f = ConnFlags(ConnFlags::TEMPLATE | ConnFlags::DROUTE).with_fwd(m);
            assert_eq!(f.fwd(), Some(m));
            assert!(f.is_template());
        }
        assert_eq!(ConnFlags(5).fwd(), None);
        assert_eq!(ConnFlags(7).fwd(), None);
    }

    #[test]
    fn backup_masks() {
        let wire = ConnFlags(
            ConnFlags::DROUTE
                | ConnFlags::HASHED
                | ConnFlags::NOOUTPUT
                | ConnFlags::ONE_PACKET
                | ConnFlags::NFCT
                | ConnFlags::IN_SEQ,
        );
        assert_eq!(
            wire.backup_v1(),
            ConnFlags(
                ConnFlags::DROUTE | ConnFlags::NOOUTPUT | ConnFlags::IN_SEQ | ConnFlags::SYNC
            )
        );
        // v0 keeps ONE_PACKET (no BACKUP_MASK there) but loses bit 16 (16-bit field).
        assert_eq!(
            wire.backup_v0(),
            ConnFlags(
                ConnFlags::DROUTE
                    | ConnFlags::NOOUTPUT
                    | ConnFlags::ONE_PACKET
                    | ConnFlags::IN_SEQ
                    | ConnFlags::SYNC
            )
        );
        let existing = ConnFlags(ConnFlags::MASQ | ConnFlags::INACTIVE | ConnFlags::SYNC);
        let upd =
            ConnFlags::backup_update(existing, ConnFlags(ConnFlags::DROUTE | ConnFlags::OUT_SEQ));
        assert_eq!(
            upd,
            ConnFlags(ConnFlags::MASQ | ConnFlags::SYNC | ConnFlags::OUT_SEQ)
        );
    }

    #[test]
    fn num_states() {
        assert_eq!(proto_num_states(proto::TCP), Some(11));
        assert_eq!(proto_num_states(proto::UDP), Some(1));
        assert_eq!(proto_num_states(proto::SCTP), Some(14));
        assert_eq!(proto_num_states(proto::AH), Some(1));
        assert_eq!(proto_num_states(proto::ESP), Some(1));
        assert_eq!(proto_num_states(1), None); // ICMP: no IPVS protocol
        assert_eq!(proto_num_states(0), None);
    }
}
