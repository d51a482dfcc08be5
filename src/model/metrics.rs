//! Classification metrics of a model on a labelled set: accuracy, macro-F1, per-class F1 and
//! the confusion matrix (rows: true class, columns: predicted class).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metrics {
    pub rows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// F1 by class, in `labels` order.
    pub per_class_f1: Vec<f64>,
    pub labels: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
}

impl Metrics {
    /// Metrics of `predicted` against `truth` (class indexes into `labels`).
    pub fn of(labels: &[String], truth: &[usize], predicted: &[usize]) -> Self {
        let classes = labels.len();
        let mut confusion = vec![vec![0u64; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            if t < classes && p < classes {
                confusion[t][p] += 1;
            }
        }
        let rows = truth.len().min(predicted.len());
        let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
        let per_class_f1: Vec<f64> = (0..classes)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let predicted_c: u64 = (0..classes).map(|t| confusion[t][c]).sum();
                let actual_c: u64 = confusion[c].iter().sum();
                let precision = if predicted_c == 0 {
                    0.0
                } else {
                    tp / predicted_c as f64
                };
                let recall = if actual_c == 0 {
                    0.0
                } else {
                    tp / actual_c as f64
                };
                if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                }
            })
            .collect();
        // Macro-F1 over the classes present in the truth.
        let present: Vec<usize> = (0..classes)
            .filter(|&c| confusion[c].iter().sum::<u64>() > 0)
            .collect();
        let macro_f1 = if present.is_empty() {
            0.0
        } else {
            present.iter().map(|&c| per_class_f1[c]).sum::<f64>() / present.len() as f64
        };
        Self {
            rows,
            accuracy: if rows == 0 {
                0.0
            } else {
                correct as f64 / rows as f64
            },
            macro_f1,
            per_class_f1,
            labels: labels.to_vec(),
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_f1_and_confusion() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let metrics = Metrics::of(&labels, &[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]);
        assert!((metrics.accuracy - 0.6).abs() < 1e-9);
        assert_eq!(
            metrics.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
        // a: p=1/2 r=1/2 f=0.5; b: p=2/3 r=1 f=0.8; c: 0.
        assert!((metrics.per_class_f1[0] - 0.5).abs() < 1e-9);
        assert!((metrics.per_class_f1[1] - 0.8).abs() < 1e-9);
        assert!((metrics.macro_f1 - 1.3 / 3.0).abs() < 1e-9);
    }
}
