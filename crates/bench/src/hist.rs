//! A small log-bucketed latency histogram (HDR-style): exact below 128 µs, then 64
//! sub-buckets per power of two, so every recorded value is within 1.6% of its bucket.

/// Linear buckets below this many microseconds.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above `LINEAR` (6 bits of mantissa).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above `LINEAR`: up to 2^40 µs (12 days), far beyond any timeout.
const OCTAVES: u64 = 34;

/// Latencies in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        let len = usize::try_from(LINEAR + OCTAVES * SUB).unwrap_or(usize::MAX);
        Self {
            counts: vec![0; len],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        let idx = if v < LINEAR {
            v
        } else {
            let e = 63 - u64::from(v.leading_zeros()); // floor(log2 v) >= 7
            let mantissa = v >> (e - u64::from(SUB_BITS)); // in [64, 128)
            LINEAR + (e - 7) * SUB + (mantissa - SUB)
        };
        usize::try_from(idx).unwrap_or(usize::MAX)
    }

    /// The smallest value that lands in bucket `i`.
    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            i
        } else {
            let e = (i - LINEAR) / SUB + 7;
            let mantissa = (i - LINEAR) % SUB + SUB;
            mantissa << (e - u64::from(SUB_BITS))
        }
    }

    pub fn record(&mut self, micros: u64) {
        let i = Self::index(micros);
        let last = self.counts.len().saturating_sub(1);
        if let Some(c) = self.counts.get_mut(i.min(last)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in microseconds: the middle of its bucket,
    /// capped at the largest value recorded. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // Rank of the sample we want, 1-based: ceil(q * n), at least 1.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1);
                return Some((lo + hi.saturating_sub(1)).div_ceil(2).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 25_000, 1 << 30] {
            let i = Histogram::index(v);
            assert!(i >= prev, "{v}");
            prev = i;
            let lo = Histogram::lower_bound(i);
            let hi = Histogram::lower_bound(i + 1);
            assert!(lo <= v && v < hi, "{v}: [{lo}, {hi})");
            assert!((hi - lo) as f64 <= (v as f64 / 60.0).max(1.0), "{v}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.02, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), Some(10_000));
        let mut g = Histogram::new();
        g.merge(&h);
        assert_eq!(g.count(), 10_000);
        assert_eq!(Histogram::new().quantile(0.5), None);
    }
}
