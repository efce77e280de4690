//! Fuzzes the backup's decoder: any datagram (the first input byte is the
//! backup's syncid). Panics, more records than one datagram can hold, and
//! records that do not survive a re-encode are failures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xvs_sync::wire::MAX_NR_CONNS;
use xvs_sync::{decode_mesg, encode_mesgs, BackupConfig, SyncConn, SyncVersion};

/// What a backup decodes from `c` re-sent as version 1.
fn as_received_v1(c: &SyncConn) -> SyncConn {
    let mut r = c.clone();
    r.flags = c.flags.backup_v1();
    r.seq = c.flags.has_seq().then(|| c.seq.unwrap_or_default());
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&syncid, buf)) = data.split_first() else {
        return;
    };
    let d = decode_mesg(buf, &BackupConfig { syncid });
    assert!(d.conns.len() <= MAX_NR_CONNS);
    assert!(d.conns.len() <= usize::from(d.nr_conns));
    assert!(d.conns.len() as u64 + d.drops.total() <= u64::from(d.nr_conns) + 1);
    if d.conns.is_empty() {
        return;
    }
    // Whatever was accepted is a valid record: it encodes, and a backup
    // reads it back as the same record.
    let msgs = encode_mesgs(SyncVersion::V1, 0, 65507, &d.conns).expect("accepted record encodes");
    let mut back = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 65507);
        let r = decode_mesg(m, &BackupConfig::default());
        assert_eq!(r.drops.total(), 0, "{:?}", r.drops);
        back.extend(r.conns);
    }
    let want: Vec<SyncConn> = d.conns.iter().map(as_received_v1).collect();
    assert_eq!(back, want);
});
