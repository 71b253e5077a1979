//! # tiergate-dist: deterministic randomness for load and traces
//!
//! SplitMix64 and uniform/Zipf choices. Runs must be reproducible from a seed, and the
//! distributions are simple enough that a dependency would add more API surface than code.
//!
//! A crate of its own, with no dependencies, because both the gRPC load generator
//! (`tiergate-load`) and the offline trace generator (`tiergate-sim`) draw from it, and the
//! simulator must not pull in a gRPC stack to do so.
#![forbid(unsafe_code)]

/// SplitMix64: fast, small, good enough for workloads (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (mixed with a constant, so that small seeds such as 0, 1, 2
    /// start far apart).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator whose state is exactly `state`, as in the reference `splitmix64.c`, so its
    /// stream can be checked against published values (the test kit builds on this).
    pub fn from_state(state: u64) -> Self {
        Rng(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How keys (orgs, recipients) are drawn.
#[derive(Debug, Clone)]
pub enum Dist {
    /// Every key equally likely.
    Uniform(u64),
    /// Key k (0-based) with probability ∝ 1/(k+1)^s; `cdf` is precomputed.
    Zipf {
        /// The cumulative distribution.
        cdf: Vec<f64>,
    },
}

impl Dist {
    /// A distribution over `n` keys: uniform, or Zipf with exponent `s` when given.
    pub fn new(n: u64, zipf_s: Option<f64>) -> Self {
        match zipf_s {
            None => Dist::Uniform(n.max(1)),
            Some(s) => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (0..n.max(1))
                    .map(|k| {
                        acc += 1.0 / ((k + 1) as f64).powf(s);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                Dist::Zipf { cdf }
            }
        }
    }

    /// Draws one key.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            Dist::Uniform(n) => rng.below(*n),
            Dist::Zipf { cdf } => {
                let u = rng.unit();
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_covers_and_zipf_skews() {
        let mut rng = Rng::new(1);
        let u = Dist::new(10, None);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[u.sample(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1_200), "{seen:?}");
        let z = Dist::new(1_000, Some(1.1));
        let mut first = 0;
        for _ in 0..10_000 {
            if z.sample(&mut rng) == 0 {
                first += 1;
            }
        }
        assert!(first > 1_000, "key 0 drawn {first} times");
    }
}
