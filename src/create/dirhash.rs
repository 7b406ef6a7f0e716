//! The order in which Linux's ext4 `readdir` returns a directory's
//! entries, so the prior records directories the way walks see them.
//!
//! On a filesystem with `dir_index` (every `mkfs.ext4` default), the kernel
//! reads an indexed directory, and also any directory of one block, in
//! **hash order** (`fs/ext4/dir.c`: `is_dx_dir`, `ext4_dx_readdir`): every
//! entry's name is hashed, and entries come back sorted by (major, minor)
//! hash. So `tar`, `cp -r`, `du` and `grep -r` visit a directory's files,
//! and its subdirectories, in that order, not in the order they lie on
//! disk. Other directories (several blocks, no index) are read linearly.
//!
//! The hash is the one the superblock names (`s_def_hash_version`, with the
//! unsigned-char variant when `s_flags` says so, and `s_hash_seed`, or the
//! MD4 initial values when the seed is zero), as in the kernel's
//! `fs/ext4/hash.c`. Half-MD4 (the default since 2002) and TEA are
//! computed here; the legacy hash and SipHash (casefolded, encrypted
//! directories) are not, and such directories keep their on-disk order:
//! the order is a prefetch guess, and never affects what a read returns.

/// `s_feature_compat` bit of hashed directories.
const COMPAT_DIR_INDEX: u32 = 0x20;
/// `s_flags` bit: names hash as unsigned chars.
const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// `s_def_hash_version` values computed here.
const DX_HASH_HALF_MD4: u8 = 1;
const DX_HASH_TEA: u8 = 2;
/// The hash state before any name, when the seed is zero.
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
/// The end-of-directory marker a major hash is kept clear of.
const HTREE_EOF_32BIT: u32 = 0x7fff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HalfMd4,
    Tea,
}

/// A filesystem's directory hash, from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirHash {
    kind: Kind,
    unsigned: bool,
    seed: [u32; 4],
}

impl DirHash {
    /// The hash of the filesystem whose 1024-byte superblock is `sb`, if it
    /// has `dir_index` and a hash computed here.
    pub fn from_superblock(sb: &[u8]) -> Option<DirHash> {
        let u32_at = |o: usize| -> u32 {
            sb.get(o..o + 4)
                .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        };
        if u32_at(0x5C) & COMPAT_DIR_INDEX == 0 {
            return None;
        }
        let kind = match *sb.get(0xFC)? {
            DX_HASH_HALF_MD4 => Kind::HalfMd4,
            DX_HASH_TEA => Kind::Tea,
            _ => return None,
        };
        let seed = [u32_at(0xEC), u32_at(0xF0), u32_at(0xF4), u32_at(0xF8)];
        Some(DirHash {
            kind,
            unsigned: u32_at(0x160) & FLAGS_UNSIGNED_HASH != 0,
            seed: if seed == [0; 4] { DEFAULT_SEED } else { seed },
        })
    }

    /// The (major, minor) hash of a directory entry's name: `readdir` of a
    /// hashed directory returns entries in this order.
    pub fn hash(&self, name: &[u8]) -> (u32, u32) {
        let mut buf = self.seed;
        let (major, minor) = match self.kind {
            Kind::HalfMd4 => {
                let mut input = [0u32; 8];
                for chunk in chunks(name, 32) {
                    self.str2hashbuf(chunk, &mut input);
                    half_md4_transform(&mut buf, &input);
                }
                (buf[1], buf[2])
            }
            Kind::Tea => {
                let mut input = [0u32; 4];
                for chunk in chunks(name, 16) {
                    self.str2hashbuf(chunk, &mut input);
                    tea_transform(&mut buf, &input);
                }
                (buf[0], buf[1])
            }
        };
        let mut major = major & !1;
        if major == HTREE_EOF_32BIT << 1 {
            major = (HTREE_EOF_32BIT - 1) << 1;
        }
        (major, minor)
    }

    /// The kernel's `str2hashbuf`: `msg` (the rest of the name, of which
    /// at most `out.len()` × 4 bytes are used) packed into words, padded
    /// with its length.
    fn str2hashbuf(&self, msg: &[u8], out: &mut [u32]) {
        // The kernel pads with the length of the whole remaining name.
        let len = msg.len() as u32;
        let mut pad = len | (len << 8);
        pad |= pad << 16;
        let mut val = pad;
        let used = msg.len().min(out.len() * 4);
        let mut k = 0;
        for (i, &c) in msg[..used].iter().enumerate() {
            let c = if self.unsigned {
                c as u32
            } else {
                c as i8 as i32 as u32
            };
            val = c.wrapping_add(val << 8);
            if i % 4 == 3 {
                out[k] = val;
                k += 1;
                val = pad;
            }
        }
        if k < out.len() {
            out[k] = val;
            k += 1;
        }
        for w in &mut out[k..] {
            *w = pad;
        }
    }
}

/// The successive tails of `name` the kernel hashes: it starts at 0, 32,
/// 64 ... (for TEA 16 ...), each tail the whole rest of the name (an empty
/// name yields none, as in the kernel's loop).
fn chunks(name: &[u8], step: usize) -> impl Iterator<Item = &[u8]> {
    (0..name.len()).step_by(step).map(move |at| &name[at..])
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], x: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let [a, b, c, d] = *x;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(version: u8, seed: [u32; 4]) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x5C..0x60].copy_from_slice(&COMPAT_DIR_INDEX.to_le_bytes());
        sb[0xFC] = version;
        for (i, w) in seed.iter().enumerate() {
            sb[0xEC + 4 * i..0xF0 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        sb
    }

    #[test]
    fn the_superblock_says_which_hash() {
        let h = DirHash::from_superblock(&sb(1, [0; 4])).unwrap();
        assert_eq!((h.kind, h.seed), (Kind::HalfMd4, DEFAULT_SEED));
        assert_eq!(
            DirHash::from_superblock(&sb(2, [1, 2, 3, 4])).map(|h| (h.kind, h.seed)),
            Some((Kind::Tea, [1, 2, 3, 4]))
        );
        assert_eq!(DirHash::from_superblock(&sb(0, [0; 4])), None, "legacy");
        let mut no_index = sb(1, [0; 4]);
        no_index[0x5C] = 0;
        assert_eq!(DirHash::from_superblock(&no_index), None);
    }

    #[test]
    fn hashes_are_even_and_stable_and_names_longer_than_a_chunk_count() {
        let h = DirHash::from_superblock(&sb(1, [0; 4])).unwrap();
        let (a, _) = h.hash(b"d0");
        assert_eq!(a & 1, 0);
        assert_eq!(h.hash(b"d0"), h.hash(b"d0"));
        assert_ne!(h.hash(b"d0"), h.hash(b"d1"));
        let long = [b'x'; 40];
        let mut other = long;
        other[39] = b'y';
        assert_ne!(h.hash(&long), h.hash(&other), "the second chunk counts");
    }
}
