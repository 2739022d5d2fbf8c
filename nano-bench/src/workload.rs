//! What the virtual users ask for: the operation mix, the key distribution and the values.
//!
//! Each virtual user owns a [`Generator`] (its own small RNG, its own key buffer), so generating a
//! request touches no shared state and allocates nothing.

use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::cli::{BenchArgs, KeyDist, WorkloadKind};

/// One request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read the key.
    Get,
    /// Write the value to the key.
    Set,
    /// Add 1 to the key.
    Incr,
    /// Write the value to the three keys of [`TXN_SUFFIXES`] as one atomic group.
    Txn,
}

/// What a [`Op::Txn`] appends to its key to name the three keys it writes.
pub const TXN_SUFFIXES: [&[u8]; 3] = [b".0", b".1", b".2"];

/// The workload, shared by every virtual user.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The operation mix.
    pub kind: WorkloadKind,
    /// Share of reads for [`WorkloadKind::Mixed`].
    pub read_ratio: f64,
    /// Distinct keys.
    pub keyspace: u64,
    /// Key choice.
    pub dist: KeyDist,
    /// Zipf exponent.
    pub zipf_exponent: f64,
    /// The value every write sends (one buffer shared by all requests).
    pub value: Bytes,
    /// Key prefix.
    pub prefix: Vec<u8>,
    /// Digits of the zero-padded key index: every key has the same length.
    pub key_width: usize,
}

impl Workload {
    /// The workload the command line describes.
    pub fn from_args(a: &BenchArgs) -> Self {
        Self::new(
            a.workload,
            a.read_ratio,
            a.keyspace,
            a.key_dist,
            a.zipf_exponent,
            a.value_size,
            &a.key_prefix,
        )
    }

    /// A workload; `value_size` bytes of printable filler per write.
    pub fn new(
        kind: WorkloadKind,
        read_ratio: f64,
        keyspace: u64,
        dist: KeyDist,
        zipf_exponent: f64,
        value_size: usize,
        prefix: &str,
    ) -> Self {
        let value: Vec<u8> = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
        let digits = keyspace.saturating_sub(1).max(1).ilog10() as usize + 1;
        Self {
            kind,
            read_ratio,
            keyspace: keyspace.max(1),
            dist,
            zipf_exponent,
            value: Bytes::from(value),
            prefix: prefix.as_bytes().to_vec(),
            // 12 digits like redis-benchmark's `key:__rand_int__`, more for larger keyspaces
            key_width: digits.max(12),
        }
    }

    /// Writes the name of key `index` into `dst` (cleared first).
    pub fn key_into(&self, index: u64, dst: &mut Vec<u8>) {
        dst.clear();
        dst.extend_from_slice(&self.prefix);
        let start = dst.len();
        dst.resize(start + self.key_width, b'0');
        let mut n = index;
        let mut i = dst.len();
        while n > 0 && i > start {
            i -= 1;
            dst[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

/// A virtual user's request stream.
#[derive(Debug)]
pub struct Generator {
    workload: Arc<Workload>,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    key: Vec<u8>,
}

impl Generator {
    /// A generator for virtual user `vu`, reproducible from `seed`.
    pub fn new(workload: Arc<Workload>, seed: u64, vu: u64) -> Self {
        let zipf = match workload.dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf => Zipf::new(workload.keyspace as f64, workload.zipf_exponent).ok(),
        };
        let rng = SmallRng::seed_from_u64(seed ^ vu.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self { key: Vec::with_capacity(workload.prefix.len() + workload.key_width), workload, rng, zipf }
    }

    /// The next key index: uniform, or zipf where index 0 is the hottest key.
    pub fn next_index(&mut self) -> u64 {
        match &self.zipf {
            None => self.rng.random_range(0..self.workload.keyspace),
            Some(z) => (z.sample(&mut self.rng) as u64).clamp(1, self.workload.keyspace) - 1,
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        match self.workload.kind {
            WorkloadKind::Get => Op::Get,
            WorkloadKind::Set => Op::Set,
            WorkloadKind::Incr => Op::Incr,
            WorkloadKind::Txn => Op::Txn,
            WorkloadKind::Mixed => {
                if self.rng.random::<f64>() < self.workload.read_ratio {
                    Op::Get
                } else {
                    Op::Set
                }
            }
        }
    }

    /// Draws the next request: its operation, with its key left in [`Generator::key`].
    pub fn next_request(&mut self) -> Op {
        let op = self.next_op();
        let idx = self.next_index();
        self.workload.key_into(idx, &mut self.key);
        op
    }

    /// The key of the last request drawn.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The shared workload.
    pub fn workload(&self) -> &Arc<Workload> {
        &self.workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: WorkloadKind, dist: KeyDist, keyspace: u64, s: f64) -> Arc<Workload> {
        Arc::new(Workload::new(kind, 0.9, keyspace, dist, s, 8, "k:"))
    }

    #[test]
    fn keys_are_fixed_width_and_distinct() {
        let w = workload(WorkloadKind::Get, KeyDist::Uniform, 1000, 1.0);
        let mut a = Vec::new();
        w.key_into(0, &mut a);
        assert_eq!(a, b"k:000000000000");
        w.key_into(987, &mut a);
        assert_eq!(a, b"k:000000000987");
        let big = Workload::new(WorkloadKind::Get, 0.9, 10u64.pow(14), KeyDist::Uniform, 1.0, 1, "");
        big.key_into(10u64.pow(14) - 1, &mut a);
        assert_eq!(a, b"99999999999999");
    }

    #[test]
    fn uniform_keys_stay_in_the_keyspace_and_cover_it() {
        let mut g = Generator::new(workload(WorkloadKind::Get, KeyDist::Uniform, 50, 1.0), 1, 0);
        let mut seen = [0u32; 50];
        for _ in 0..50_000 {
            seen[g.next_index() as usize] += 1;
        }
        // each key expects 1000 hits; a gross skew would show far outside this band
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    /// Share of the `top` hottest keys among `n` under zipf(s): H(top, s) / H(n, s).
    fn zipf_top_share(n: u64, s: f64, top: u64) -> f64 {
        let h = |m: u64| (1..=m).map(|k| 1.0 / (k as f64).powf(s)).sum::<f64>();
        h(top) / h(n)
    }

    #[test]
    fn zipf_skew_matches_theory() {
        for s in [0.99, 1.2] {
            let n = 1000;
            let mut g = Generator::new(workload(WorkloadKind::Get, KeyDist::Zipf, n, s), 7, 3);
            let samples = 200_000;
            let mut counts = vec![0u64; n as usize];
            for _ in 0..samples {
                counts[g.next_index() as usize] += 1;
            }
            for top in [1, 10, 100] {
                let got = counts[..top as usize].iter().sum::<u64>() as f64 / samples as f64;
                let want = zipf_top_share(n, s, top);
                assert!((got - want).abs() < 0.01, "s={s} top {top}: got {got:.4}, theory {want:.4}");
            }
            // and the hottest key really is index 0
            let hottest = counts.iter().enumerate().max_by_key(|(_, c)| **c).map(|(i, _)| i);
            assert_eq!(hottest, Some(0));
        }
    }

    #[test]
    fn read_ratio_is_respected() {
        for ratio in [0.0, 0.5, 0.9, 1.0] {
            let w = Arc::new(Workload::new(WorkloadKind::Mixed, ratio, 10, KeyDist::Uniform, 1.0, 8, "k:"));
            let mut g = Generator::new(w, 11, 0);
            let n = 100_000;
            let reads = (0..n).filter(|_| g.next_request() == Op::Get).count() as f64 / n as f64;
            assert!((reads - ratio).abs() < 0.01, "ratio {ratio}: got {reads}");
        }
        let mut g = Generator::new(workload(WorkloadKind::Set, KeyDist::Uniform, 10, 1.0), 1, 0);
        assert!((0..100).all(|_| g.next_request() == Op::Set));
    }

    #[test]
    fn generators_are_reproducible_and_independent_per_user() {
        let w = workload(WorkloadKind::Mixed, KeyDist::Zipf, 10_000, 0.99);
        let draw = |vu| {
            let mut g = Generator::new(w.clone(), 42, vu);
            (0..100).map(|_| (g.next_request(), g.key().to_vec())).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
