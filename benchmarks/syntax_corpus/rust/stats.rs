//! Descriptive statistics over slices of f64.

use std::collections::HashMap;

/// Arithmetic mean; None for an empty slice.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

/// Median of the values (sorted copy).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        Some((sorted[mid - 1] + sorted[mid]) / 2.0)
    } else {
        Some(sorted[mid])
    }
}

pub fn variance(values: &[f64]) -> Option<f64> {
    let m = mean(values)?;
    let total: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    Some(total / values.len() as f64)
}

/// Most frequent value after rounding to `digits` decimals.
pub fn mode(values: &[f64], digits: i32) -> Option<f64> {
    let scale = 10f64.powi(digits);
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for v in values {
        *counts.entry((v * scale).round() as i64).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(k, _)| k as f64 / scale)
}

pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mean = mean(values)?;
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        for &v in values {
            min = min.min(v);
            max = max.max(v);
        }
        Some(Summary { count: values.len(), min, max, mean })
    }

    pub fn range(&self) -> f64 {
        self.max - self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count() {
        assert_eq!(median(&[1.0, 3.0, 2.0, 4.0]), Some(2.5));
    }
}
