//! The in-kernel traffic generator: `xvs-xdp`'s `gen.c` XDP program run with
//! BPF_PROG_RUN on live frames (XDP_TX sends each frame out of the interface),
//! configured through its map. Bounded: stopped after the measurement.

use anyhow::{anyhow, Context, Result};
use std::net::Ipv4Addr;
use xvs_xdp::bpf::testrun::{start_live, TestProgram, TestRunHandle, TestRunOpts};

/// What to send.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// First source address; `src_addrs` consecutive ones are used.
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub src_addrs: u32,
    pub src_ports: u32,
    /// Ethernet frame size (64 or 1500; without FCS: 60 means 64 on a wire).
    pub frame_len: usize,
    /// Packets per second, 0 = as fast as possible.
    pub rate: u64,
    pub cpu: Option<usize>,
    /// 17 (UDP) or 6 (TCP, header only, with `tcp_flags`).
    pub proto: u8,
    pub tcp_flags: u8,
    /// Frames to send in all, 0 = until stopped.
    pub budget: u64,
    /// Flow number of the first frame: successive runs that must not repeat
    /// flows (every packet a new connection) start where the last one ended.
    pub first_flow: u64,
}

/// A running generator.
pub struct Gen {
    prog: TestProgram,
    run: Option<TestRunHandle>,
}

fn cfg_bytes(s: &GenSpec) -> [u8; 64] {
    let mut c = [0u8; 64];
    c[0..6].copy_from_slice(&s.dst_mac);
    c[6..12].copy_from_slice(&s.src_mac);
    c[12..16].copy_from_slice(&s.saddr.octets());
    c[16..20].copy_from_slice(&s.daddr.octets());
    c[20..22].copy_from_slice(&s.sport.to_ne_bytes());
    c[22..24].copy_from_slice(&s.dport.to_ne_bytes());
    c[24..28].copy_from_slice(&s.src_addrs.max(1).to_ne_bytes());
    c[28..32].copy_from_slice(&s.src_ports.max(1).to_ne_bytes());
    let l4_len = (s.frame_len.max(60) - 14 - 20) as u16;
    c[32..34].copy_from_slice(&l4_len.to_ne_bytes());
    c[34] = s.proto;
    c[35] = s.tcp_flags;
    let cost = 1_000_000_000u64.checked_div(s.rate).unwrap_or(0);
    c[40..48].copy_from_slice(&cost.to_ne_bytes());
    c[48..56].copy_from_slice(&(cost * 64).to_ne_bytes());
    c[56..64].copy_from_slice(&s.budget.to_ne_bytes());
    c
}

impl Gen {
    /// Starts sending on `ifindex` (an interface of the calling thread's namespace).
    pub fn start(ifindex: u32, spec: &GenSpec) -> Result<Gen> {
        let prog = TestProgram::load(xvs_xdp::bpf::GEN_OBJ, "xdp")
            .map_err(|e| anyhow!("{e}"))
            .context("loading the generator program")?;
        let cfg = prog.map("gen_cfg").map_err(|e| anyhow!("{e}"))?;
        cfg.update(&0u32.to_ne_bytes(), &cfg_bytes(spec), 0)
            .context("configuring the generator")?;
        // gen_state: sent, dropped, next_ns, seq (the flow counter).
        let mut st = [0u8; 32];
        st[24..32].copy_from_slice(&spec.first_flow.to_ne_bytes());
        prog.map("gen_state")
            .map_err(|e| anyhow!("{e}"))?
            .update(&0u32.to_ne_bytes(), &st, 0)
            .context("setting the generator's first flow")?;
        let frame = vec![0u8; spec.frame_len.max(60)];
        let run = start_live(
            &prog.prog,
            ifindex,
            &frame,
            &TestRunOpts {
                cpu: spec.cpu,
                batch_size: 64,
            },
        )
        .map_err(|e| anyhow!("{e}"))
        .context("starting BPF_PROG_RUN with live frames")?;
        Ok(Gen {
            prog,
            run: Some(run),
        })
    }

    /// Frames sent so far (XDP_TX'ed) and dropped by the rate limit.
    pub fn counts(&self) -> (u64, u64) {
        let Ok(st) = self.prog.map("gen_state") else {
            return (0, 0);
        };
        let mut v = [0u8; 32];
        if st.lookup(&0u32.to_ne_bytes(), &mut v).is_err() {
            return (0, 0);
        }
        let w = |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        (w(0), w(1))
    }

    /// Stops the run; returns frames sent.
    pub fn stop(mut self) -> Result<u64> {
        if let Some(r) = self.run.take() {
            r.stop().map_err(|e| anyhow!("{e}"))?;
        }
        Ok(self.counts().0)
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        if let Some(r) = self.run.take() {
            let _ = r.stop();
        }
    }
}
