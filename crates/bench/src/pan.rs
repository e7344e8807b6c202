//! Unique, Luhn-valid test card numbers: `40000000` + 7 free digits + a check digit, the
//! volume-testing range every test key accepts. 10^7 numbers in all.

/// The test-mode prefix.
pub const PREFIX: &str = "40000000";
/// How many distinct numbers the range holds.
pub const SPACE: u64 = 10_000_000;

/// The Luhn check digit for `body` (ASCII digits, without the check digit).
fn check_digit(body: &[u8]) -> u8 {
    let mut sum = 0u32;
    // Walking from the right, the digit next to the (future) check digit is doubled.
    for (i, d) in body.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    // (10 - sum % 10) % 10 is below 10, so the cast cannot truncate.
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// The `n`-th number of the range (`n < SPACE`).
pub fn nth(n: u64) -> String {
    let mut s = format!("{PREFIX}{:07}", n % SPACE);
    let c = check_digit(s.as_bytes());
    s.push(char::from(c));
    s
}

/// A contiguous slice of the range that one worker draws from, so that workers (and runs
/// given disjoint `--pan-offset`s) never send the same number twice.
pub struct PanSlice {
    next: u64,
    end: u64,
}

impl PanSlice {
    /// Worker `w` of `workers`, within `[start, end)` of the range.
    pub fn for_worker(start: u64, end: u64, w: u64, workers: u64) -> Self {
        let len = end.saturating_sub(start);
        let n = workers.max(1);
        // Cut points w*len/n: every number belongs to exactly one worker, none is lost.
        let cut = |i: u64| {
            start + u64::try_from(u128::from(len) * u128::from(i) / u128::from(n)).unwrap_or(0)
        };
        Self {
            next: cut(w),
            end: cut(w + 1),
        }
    }

    /// The next number, or `None` once this worker's slice is used up.
    pub fn next_pan(&mut self) -> Option<String> {
        (self.next < self.end).then(|| {
            self.next += 1;
            nth(self.next - 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luhn(digits: &[u8]) -> bool {
        let mut sum = 0;
        for (i, d) in digits.iter().rev().enumerate() {
            let mut v = u32::from(d - b'0');
            if i % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
        }
        sum % 10 == 0
    }

    #[test]
    fn numbers_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..2000).chain(SPACE - 10..SPACE) {
            let p = nth(n);
            assert_eq!(p.len(), 16);
            assert!(p.starts_with(PREFIX));
            assert!(luhn(p.as_bytes()), "{p}");
            assert!(seen.insert(p));
        }
    }

    #[test]
    fn slices_do_not_overlap() {
        let mut a = PanSlice::for_worker(100, 200, 0, 2);
        let mut b = PanSlice::for_worker(100, 200, 1, 2);
        let xs: Vec<_> = std::iter::from_fn(|| a.next_pan()).collect();
        let ys: Vec<_> = std::iter::from_fn(|| b.next_pan()).collect();
        assert_eq!(xs.len(), 50);
        assert_eq!(ys.len(), 50);
        assert_eq!(xs.first().unwrap(), &nth(100));
        assert_eq!(ys.first().unwrap(), &nth(150));
        assert!(xs.iter().all(|x| !ys.contains(x)));
        let total: usize = (0..64)
            .map(|w| {
                let mut s = PanSlice::for_worker(0, 10_000, w, 64);
                std::iter::from_fn(|| s.next_pan()).count()
            })
            .sum();
        assert_eq!(total, 10_000);
    }
}
