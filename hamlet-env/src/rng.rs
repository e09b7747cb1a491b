//! A small seeded random number generator whose whole state is one `u64`, so it can travel in a
//! session snapshot: a session resumed by a new worker draws exactly the numbers its predecessor
//! would have drawn (SplitMix64, Steele et al.; passes BigCrush — plenty for ε-greedy play).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionRng {
    pub state: u64,
}

impl SessionRng {
    pub fn new(seed: u64) -> Self {
        SessionRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_reproducible() {
        let mut a = SessionRng::new(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[a.below(5)] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
        let (mut b, mut c) = (SessionRng::new(3), SessionRng::new(3));
        assert!((0..100).all(|_| b.next_u64() == c.next_u64()));
        let x = SessionRng::new(3).next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}
