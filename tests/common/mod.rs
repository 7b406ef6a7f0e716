//! Helpers shared by the integration tests: deterministic test volumes.
#![allow(dead_code)]

use std::path::Path;

use rand::{RngCore, SeedableRng};

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// A volume of `blocks` blocks of `bs` bytes plus a partial tail of `tail`
/// bytes, mixing what real disks hold: random (incompressible) blocks, zero
/// blocks (holes), one block repeated many times, and compressible text.
pub fn mixed_volume(bs: usize, blocks: usize, tail: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(bs * blocks + tail);
    let repeated = random_bytes(seed ^ 0xabcd, bs);
    for i in 0..blocks {
        match i % 8 {
            0..=2 => v.extend(random_bytes(seed + i as u64, bs)),
            3 | 4 => v.extend(std::iter::repeat_n(0u8, bs)),
            5 => v.extend_from_slice(&repeated),
            _ => {
                let line = format!("line {i} of a compressible text block, seed {seed}\n");
                v.extend(line.bytes().cycle().take(bs));
            }
        }
    }
    v.extend(random_bytes(seed + 999_999, tail));
    v
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write test volume");
}
