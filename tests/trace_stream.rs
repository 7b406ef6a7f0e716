//! A 10-million-record trace is written and read back streaming, with
//! bounded memory. Alone in its own test binary so the process's peak RSS
//! is this test's.

use snapahead::trace::{Op, Record, TraceHeader, TraceReader, TraceWriter};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn ten_million_records_stream_with_bounded_memory() {
    const N: u64 = 10_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.trace");
    let header = TraceHeader {
        volume: "big".into(),
        volume_size: 1 << 40,
        start_ms: 0,
        host: "h".into(),
        source: "test".into(),
    };
    let rec = |i: u64| Record {
        t_ns: i * 100,
        op: if i % 10 == 0 { Op::Write } else { Op::Read },
        offset: (i.wrapping_mul(2654435761) % (1 << 28)) * 4096,
        len: 4096,
        stream: (i % 7) as u32,
    };
    let before = peak_rss_kib();
    let f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = TraceWriter::new(f, &header).unwrap();
    for i in 0..N {
        w.push(&rec(i)).unwrap();
    }
    w.finish().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let r = TraceReader::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let mut n = 0u64;
    for (i, x) in r.enumerate() {
        let x = x.unwrap();
        assert_eq!(x, rec(i as u64));
        n += 1;
    }
    assert_eq!(n, N);
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    // 10M records are 250 MB uncompressed; streaming holds one frame.
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    assert!(size < N * 25, "trace is {size} bytes");
    eprintln!(
        "10M records: {} MiB on disk, peak RSS +{grown_mib} MiB",
        size >> 20
    );
}
