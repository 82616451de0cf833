//! Embeddings -> scores.

/// Dot product of two equally long vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `softmax(logit_scale * image . text_i)` over `i`, computed stably.
pub fn zero_shot_probabilities(image: &[f32], texts: &[Vec<f32>], logit_scale: f32) -> Vec<f32> {
    let logits: Vec<f32> = texts.iter().map(|t| logit_scale * dot(image, t)).collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Indices of `probs` sorted from highest to lowest (ties keep their order).
pub fn ranking(probs: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_rank() {
        let img = vec![1.0, 0.0];
        let texts = vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.6, 0.8]];
        let p = zero_shot_probabilities(&img, &texts, 10.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(ranking(&p), vec![1, 2, 0]);
        let e0 = (0.0f32).exp();
        let e1 = (10.0f32).exp();
        let e2 = (6.0f32).exp();
        assert!((p[1] - e1 / (e0 + e1 + e2)).abs() < 1e-6);
    }
}
