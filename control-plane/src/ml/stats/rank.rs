//! Midranks: ascending ranks 1..=n, tied values sharing the average of their ranks.

/// Midrank of each value, in input order. Values are compared with `total_cmp` for the order and
/// `==` for ties (so `-0.0` and `0.0` tie); callers pass finite values.
pub fn midranks(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        // positions i..=j hold ranks i+1 ..= j+1
        let avg = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midranks_with_ties() {
        assert_eq!(
            midranks(&[0.6, 0.1, 0.6, 0.9, 0.3]),
            [3.5, 1.0, 3.5, 5.0, 2.0]
        );
        assert_eq!(midranks(&[2.0; 4]), [2.5; 4]);
        assert_eq!(midranks(&[-0.0, 0.0, -1.0]), [2.5, 2.5, 1.0]);
        assert!(midranks(&[]).is_empty());
    }
}
