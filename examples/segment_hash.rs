//! What the disk cache's verification segment size costs (docs/benchmarks.md,
//! "Read path rework"): BLAKE3 of one segment, which a hot 4 KiB read pays,
//! against computing every segment's chaining value of a 512 KiB block, which
//! each fetched block pays. `cargo run --release --example segment_hash`
use blake3::hazmat::HasherExt;

fn segment_cvs(block: &[u8], seg: usize) -> u8 {
    block
        .chunks(seg)
        .enumerate()
        .map(|(i, s)| {
            blake3::Hasher::new()
                .set_input_offset((i * seg) as u64)
                .update(s)
                .finalize_non_root()[0]
        })
        .fold(0, |a, b| a ^ b)
}

fn main() {
    let block: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let rounds = 2000;
    let mut sink = 0u8;
    for seg in [4096usize, 8192, 16384, 32768] {
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            sink ^= segment_cvs(&block, seg);
        }
        let whole = (rounds * block.len()) as f64 / t.elapsed().as_secs_f64() / 1e6;
        let t = std::time::Instant::now();
        let n = 200_000;
        for i in 0..n {
            let s = &block[(i % 16) * seg..][..seg];
            sink ^= blake3::Hasher::new().update(s).finalize_non_root()[0];
        }
        let one = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!("segment {seg:>5} B: every CV of a 512 KiB block {whole:.0} MB/s; one segment {one:.2} us");
    }
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        sink ^= blake3::hash(&block).as_bytes()[0];
    }
    let plain = (rounds * block.len()) as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!("plain blake3::hash of the block: {plain:.0} MB/s ({sink})");
}
