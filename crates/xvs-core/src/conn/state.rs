//! The IPVS TCP state machine: states, the normal and secure_tcp transition
//! tables, default timeouts, and which states count as active.
//!
//! Transcribed from the kernel's `ip_vs_proto_tcp.c` (`tcp_states`,
//! `tcp_states_dos`, `tcp_timeouts`, `tcp_state_active_table`), see
//! shared/ipvs-semantics.md §5.

use serde::{Deserialize, Serialize};

/// A TCP connection state as IPVS names it (index = the kernel's `IP_VS_TCP_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TcpState {
    /// `IP_VS_TCP_S_NONE`: no segment seen yet (UDP connections stay here).
    None = 0,
    /// ESTABLISHED.
    Established = 1,
    /// SYN_SENT.
    SynSent = 2,
    /// SYN_RECV.
    SynRecv = 3,
    /// FIN_WAIT.
    FinWait = 4,
    /// TIME_WAIT.
    TimeWait = 5,
    /// CLOSE.
    Close = 6,
    /// CLOSE_WAIT.
    CloseWait = 7,
    /// LAST_ACK.
    LastAck = 8,
    /// LISTEN.
    Listen = 9,
    /// SYNACK.
    SynAck = 10,
}

/// The number of TCP states.
pub const TCP_STATE_COUNT: usize = 11;

impl TcpState {
    /// Every state, by index.
    pub const ALL: [TcpState; TCP_STATE_COUNT] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The state of index `i` (`None` for an unknown one).
    #[inline]
    pub fn from_index(i: u8) -> TcpState {
        *TcpState::ALL.get(i as usize).unwrap_or(&TcpState::None)
    }

    /// Name as `ipvsadm -c` prints it (the kernel's `tcp_state_name_table`).
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// Whether a conn in this state counts in ActiveConn (the current kernel's
    /// `tcp_state_active_table`: ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK).
    #[inline]
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }
}

/// Which way a packet travels relative to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → VIP (`IP_VS_DIR_INPUT`).
    Input,
    /// Real server → client, seen only for NAT/FULLNAT (`IP_VS_DIR_OUTPUT`).
    Output,
    /// Client → VIP on a conn that has seen no output yet and never will (DR/TUN:
    /// the kernel's `INPUT_ONLY` row, used while the conn has `NOOUTPUT`).
    InputOnly,
}

/// The event a TCP segment represents: RST > SYN > FIN > ACK, as `tcp_state_idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent {
    /// A SYN.
    Syn = 0,
    /// A FIN.
    Fin = 1,
    /// An ACK.
    Ack = 2,
    /// A RST.
    Rst = 3,
}

/// TCP header flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP header flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP header flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP header flag ACK.
pub const TCP_ACK: u8 = 0x10;

impl TcpEvent {
    /// The event of a segment with these flags; None for a segment with none of
    /// SYN/FIN/ACK/RST (the kernel then moves the conn to CLOSE).
    #[inline]
    pub fn from_flags(flags: u8) -> Option<TcpEvent> {
        if flags & TCP_RST != 0 {
            Some(TcpEvent::Rst)
        } else if flags & TCP_SYN != 0 {
            Some(TcpEvent::Syn)
        } else if flags & TCP_FIN != 0 {
            Some(TcpEvent::Fin)
        } else if flags & TCP_ACK != 0 {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

type Row = [TcpState; TCP_STATE_COUNT];
/// [direction][event] → row indexed by current state.
type Table = [[Row; 4]; 3];

// Columns: NO ES SS SR FW TW CL CW LA LI SA.
const NORMAL: Table = [
    // INPUT
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW], // fin
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR], // rst
    ],
    // OUTPUT
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

const SECURE: Table = [
    // INPUT
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    // OUTPUT: syn differs, fin/ack/rst as normal
    [
        [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        NORMAL[1][1],
        NORMAL[1][2],
        NORMAL[1][3],
    ],
    // INPUT-ONLY: syn differs
    [
        [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        NORMAL[2][1],
        NORMAL[2][2],
        NORMAL[2][3],
    ],
];

/// The next state for a segment, per the normal or the secure_tcp table.
#[inline]
pub fn tcp_transition(secure: bool, dir: Direction, state: TcpState, flags: u8) -> TcpState {
    let Some(ev) = TcpEvent::from_flags(flags) else {
        return TcpState::Close;
    };
    let table = if secure { &SECURE } else { &NORMAL };
    let d = match dir {
        Direction::Input => 0,
        Direction::Output => 1,
        Direction::InputOnly => 2,
    };
    table[d][ev as usize][state as usize]
}

/// Timeouts in seconds: per TCP state, UDP, and the initial timeout of a new conn
/// before its first transition. Defaults are the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Seconds per TCP state, by index.
    pub tcp: [u32; TCP_STATE_COUNT],
    /// Seconds for UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            // NONE ES SS SR FW TW CL CW LA LI SA
            tcp: [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120],
            udp: 300,
        }
    }
}

/// Largest timeout `--set` accepts (ipvsadm's limit, 31 days).
pub const MAX_TIMEOUT: u32 = 2_678_400;

impl Timeouts {
    /// `--set tcp tcpfin udp`: a 0 leaves that value as it is (the kernel's rule).
    pub fn set(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        if tcp != 0 {
            self.tcp[TcpState::Established as usize] = tcp;
        }
        if tcpfin != 0 {
            self.tcp[TcpState::FinWait as usize] = tcpfin;
        }
        if udp != 0 {
            self.udp = udp;
        }
    }

    /// The three values `--timeout` lists: (tcp, tcpfin, udp).
    pub fn listed(&self) -> (u32, u32, u32) {
        (
            self.tcp[TcpState::Established as usize],
            self.tcp[TcpState::FinWait as usize],
            self.udp,
        )
    }

    /// The timeout of TCP state `s`, in seconds.
    #[inline]
    pub fn tcp_state(&self, s: TcpState) -> u32 {
        self.tcp[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = TCP_SYN;
    const SYNACK: u8 = TCP_SYN | TCP_ACK;
    const ACK: u8 = TCP_ACK;
    const FINACK: u8 = TCP_FIN | TCP_ACK;
    const RST: u8 = TCP_RST;

    fn walk(secure: bool, steps: &[(Direction, u8)]) -> Vec<TcpState> {
        let mut s = TcpState::None;
        steps
            .iter()
            .map(|&(d, f)| {
                s = tcp_transition(secure, d, s, f);
                s
            })
            .collect()
    }

    #[test]
    fn nat_handshake_data_and_close_from_client() {
        use Direction::*;
        let got = walk(
            false,
            &[
                (Input, SYN),     // NO -syn-> SR
                (Output, SYNACK), // SR: syn column of OUTPUT -> SR
                (Input, ACK),     // SR -ack-> ES
                (Input, ACK),     // ES stays
                (Input, FINACK),  // ES -fin(in)-> CW
                (Output, FINACK), // CW -fin(out)-> TW
                (Input, ACK),     // TW -ack-> TW
            ],
        );
        assert_eq!(got, vec![SR, SR, ES, ES, CW, TW, TW]);
    }

    #[test]
    fn nat_close_from_server_side() {
        use Direction::*;
        let got = walk(
            false,
            &[
                (Input, SYN),
                (Output, SYNACK),
                (Input, ACK),
                (Output, FINACK), // ES -fin(out)-> FW
                (Input, FINACK),  // FW -fin(in)-> TW
            ],
        );
        assert_eq!(got, vec![SR, SR, ES, FW, TW]);
    }

    #[test]
    fn dr_input_only_lifecycle() {
        use Direction::*;
        let got = walk(
            false,
            &[
                (InputOnly, SYN),    // SR
                (InputOnly, ACK),    // ES
                (InputOnly, FINACK), // ES -fin(io)-> FW
                (InputOnly, ACK),    // FW -ack-> FW
                (InputOnly, RST),    // FW -rst-> CL
            ],
        );
        assert_eq!(got, vec![SR, ES, FW, FW, CL]);
    }

    #[test]
    fn rst_and_flagless_segments() {
        assert_eq!(tcp_transition(false, Direction::Input, ES, RST), CL);
        assert_eq!(tcp_transition(false, Direction::Input, ES, 0), CL);
        // RST wins over SYN in the event index.
        assert_eq!(
            tcp_transition(false, Direction::Input, TcpState::None, SYN | RST),
            CL
        );
    }

    #[test]
    fn secure_tcp_keeps_half_open_conns_in_synack() {
        use Direction::*;
        // NAT under secure_tcp: SYN -> SR, RS SYN-ACK -> SA, client ACK stays SA,
        // ES only when the RS sends its ACK.
        let got = walk(
            true,
            &[(Input, SYN), (Output, SYNACK), (Input, ACK), (Output, ACK)],
        );
        assert_eq!(got, vec![SR, SA, SA, ES]);
        // DR/TUN: a SYN goes straight to SA.
        assert_eq!(walk(true, &[(InputOnly, SYN)]), vec![SA]);
    }

    #[test]
    fn active_states_are_those_of_the_current_kernel() {
        let active: Vec<_> = TcpState::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, vec![&ES, &SS, &SR, &SA]);
    }

    #[test]
    fn set_timeouts_zero_keeps() {
        let mut t = Timeouts::default();
        assert_eq!(t.listed(), (900, 120, 300));
        t.set(3600, 0, 60);
        assert_eq!(t.listed(), (3600, 120, 60));
    }
}
