//! Zero-shot classification and retrieval metrics, defined as LAION's CLIP_benchmark 1.6
//! defines them (`clip_benchmark/metrics/zeroshot_classification.py` and
//! `zeroshot_retrieval.py`), so that numbers compare with published ones.

use serde::Serialize;

/// The zero-shot weight of each class: the mean of its L2-normalised template embeddings,
/// L2-normalised again (`zero_shot_classifier`). `per_class[c]` holds class `c`'s template
/// embeddings.
pub fn class_embeddings(per_class: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    per_class
        .iter()
        .map(|templates| {
            let dim = templates.first().map_or(0, Vec::len);
            let mut mean = vec![0f64; dim];
            for t in templates {
                let norm = l2(t);
                for (m, v) in mean.iter_mut().zip(t) {
                    *m += *v as f64 / norm;
                }
            }
            let n = templates.len().max(1) as f64;
            mean.iter_mut().for_each(|m| *m /= n);
            let norm = mean
                .iter()
                .map(|m| m * m)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            mean.iter().map(|m| (m / norm) as f32).collect()
        })
        .collect()
}

fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE)
}

/// Dot products of each row of `a` with each row of `b` (`a.len()` x `b.len()`).
pub fn similarities(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter()
        .map(|x| {
            b.iter()
                .map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum())
                .collect()
        })
        .collect()
}

/// Indices of `scores` from highest to lowest; ties keep the lower index first.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]).then(i.cmp(&j)));
    idx
}

/// What `eval zero-shot` and `eval linear-probe` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Samples evaluated.
    pub samples: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy; `None` with fewer than 5 classes (CLIP_benchmark reports NaN).
    pub top5: Option<f64>,
    /// Mean per-class recall over the classes that have samples (scikit-learn's
    /// `balanced_accuracy_score`, CLIP_benchmark's `mean_per_class_recall`).
    pub balanced_accuracy: f64,
    /// Recall of each class; `None` for a class without samples.
    pub per_class_recall: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl ClassificationReport {
    /// Scores `logits[i][c]` (higher is more likely) against `targets[i]` over
    /// `classes` classes.
    pub fn from_logits(logits: &[Vec<f32>], targets: &[usize], classes: usize) -> Self {
        let n = targets.len();
        let mut confusion = vec![vec![0usize; classes]; classes];
        let (mut hit1, mut hit5) = (0usize, 0usize);
        for (row, &t) in logits.iter().zip(targets) {
            let order = ranking(row);
            confusion[t][order[0]] += 1;
            hit1 += (order[0] == t) as usize;
            hit5 += order.iter().take(5).any(|&c| c == t) as usize;
        }
        let per_class_recall: Vec<Option<f64>> = confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect();
        let present: Vec<f64> = per_class_recall.iter().flatten().copied().collect();
        let balanced_accuracy = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        ClassificationReport {
            samples: n,
            top1: frac(hit1),
            top5: (classes >= 5).then(|| frac(hit5)),
            balanced_accuracy,
            per_class_recall,
            confusion,
        }
    }

    /// The confusion matrix as CSV: a header of predicted class names, one row per true class.
    pub fn confusion_csv(&self, class_names: &[String]) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::from("true\\predicted");
        for name in class_names {
            out.push(',');
            out.push_str(&quote(name));
        }
        out.push('\n');
        for (name, row) in class_names.iter().zip(&self.confusion) {
            out.push_str(&quote(name));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        out
    }
}

/// Recall@k in both directions for image-text retrieval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    /// Images (queries).
    pub images: usize,
    /// Captions (queries the other way).
    pub texts: usize,
    /// `(k, recall)`: fraction of images with at least one of their captions among the k
    /// captions most similar to them (CLIP_benchmark's `text_retrieval_recall@k`).
    pub image_to_text: Vec<(usize, f64)>,
    /// `(k, recall)`: fraction of captions whose image is among the k images most similar to
    /// them (CLIP_benchmark's `image_retrieval_recall@k`).
    pub text_to_image: Vec<(usize, f64)>,
}

impl RetrievalReport {
    /// Scores embeddings where caption `t` belongs to image `text_image[t]`. A `k` larger than
    /// the candidates counts every candidate.
    pub fn new(
        image_emb: &[Vec<f32>],
        text_emb: &[Vec<f32>],
        text_image: &[usize],
        ks: &[usize],
    ) -> Self {
        let scores = similarities(text_emb, image_emb); // texts x images
        let text_ranks: Vec<Vec<usize>> = scores.iter().map(|row| ranking(row)).collect();
        let image_ranks: Vec<Vec<usize>> = (0..image_emb.len())
            .map(|i| ranking(&scores.iter().map(|row| row[i]).collect::<Vec<_>>()))
            .collect();
        let recall = |hits: usize, n: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
        let text_to_image = ks
            .iter()
            .map(|&k| {
                let hits = text_ranks
                    .iter()
                    .zip(text_image)
                    .filter(|(rank, &img)| rank.iter().take(k).any(|&i| i == img))
                    .count();
                (k, recall(hits, text_emb.len()))
            })
            .collect();
        let image_to_text = ks
            .iter()
            .map(|&k| {
                let hits = image_ranks
                    .iter()
                    .enumerate()
                    .filter(|(img, rank)| rank.iter().take(k).any(|&t| text_image[t] == *img))
                    .count();
                (k, recall(hits, image_emb.len()))
            })
            .collect();
        RetrievalReport {
            images: image_emb.len(),
            texts: text_emb.len(),
            image_to_text,
            text_to_image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_embedding_is_the_renormalised_mean_of_normalised_templates() {
        let e = class_embeddings(&[vec![vec![2.0, 0.0], vec![0.0, 0.5]]]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((e[0][0] - h).abs() < 1e-7 && (e[0][1] - h).abs() < 1e-7);
    }

    #[test]
    fn report_counts_top_k_balanced_accuracy_and_confusion() {
        // 3 classes: two samples of class 0 (one right), one of class 1 (right).
        let logits = vec![
            vec![0.9, 0.1, 0.0],
            vec![0.1, 0.2, 0.7],
            vec![0.0, 1.0, 0.5],
        ];
        let r = ClassificationReport::from_logits(&logits, &[0, 0, 1], 3);
        assert!((r.top1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.top5, None);
        assert_eq!(r.per_class_recall, vec![Some(0.5), Some(1.0), None]);
        assert!((r.balanced_accuracy - 0.75).abs() < 1e-12);
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 1], vec![0, 1, 0], vec![0, 0, 0]]
        );
        let csv = r.confusion_csv(&["a".into(), "b, c".into(), "d".into()]);
        assert_eq!(csv.lines().nth(2), Some("\"b, c\",0,1,0"));
    }

    #[test]
    fn retrieval_recall_follows_both_directions() {
        let images = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        // Captions 0, 1 belong to image 0; caption 2 to image 1 but points at image 0.
        let texts = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.8, 0.2]];
        let r = RetrievalReport::new(&images, &texts, &[0, 0, 1], &[1, 2]);
        assert_eq!(r.text_to_image, vec![(1, 2.0 / 3.0), (2, 1.0)]);
        // Image 1's best caption is caption 2 (its own).
        assert_eq!(r.image_to_text, vec![(1, 1.0), (2, 1.0)]);
    }
}
