//! A small deterministic PRNG (SplitMix64) for choosing among ready cases.
//!
//! Seeded from the command, so every replica makes the same choice; never seeded from
//! the thread RNG or the clock inside apply.

/// SplitMix64: fast, statistically sound for choosing, and trivially reproducible.
pub struct Rng(u64);

impl Rng {
    /// A generator for one command.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A version-4-shaped UUID (a lease token the engine chooses itself).
    pub fn uuid(&mut self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A uniform index in `0..n` (`n > 0`), by rejection so that no index is favoured.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[rng.below(3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn same_seed_same_choices() {
        let a: Vec<usize> = (0..20)
            .scan(Rng::new(42), |r, _| Some(r.below(10)))
            .collect();
        let b: Vec<usize> = (0..20)
            .scan(Rng::new(42), |r, _| Some(r.below(10)))
            .collect();
        assert_eq!(a, b);
    }
}
