//! Linear probe: multinomial logistic regression on frozen embeddings, with its L2 strength
//! chosen on a validation split.
//!
//! The model and objective are scikit-learn's `LogisticRegression(C=c)` (lbfgs solver,
//! multinomial, intercept fitted and not penalised): minimise
//! `sum_i -log softmax(W x_i + b)[y_i] + ||W||^2 / (2C)`. The objective is strictly convex
//! in `W`, so any solver that converges lands on scikit-learn's solution. It is small
//! (classes x embedding size), so it is solved here by L-BFGS in plain Rust rather than
//! through a linear-algebra stack.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::metrics::ClassificationReport;

/// Inverse L2 strengths tried on the validation split: 10^-2 .. 10^6, half a decade apart.
pub fn c_grid() -> Vec<f64> {
    (0..=16)
        .map(|i| 10f64.powf(-2.0 + 0.5 * i as f64))
        .collect()
}

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    classes: usize,
    dim: usize,
    /// `classes` rows of `dim` weights, then `classes` intercepts.
    params: Vec<f64>,
}

impl LogisticRegression {
    /// Fits on rows `x` with labels `y` (each < `classes`) and inverse L2 strength `c`.
    pub fn fit(x: &[Vec<f32>], y: &[usize], classes: usize, c: f64) -> Self {
        let dim = x.first().map_or(0, Vec::len);
        let x64: Vec<Vec<f64>> = x
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let objective = Objective {
            x: &x64,
            y,
            classes,
            dim,
            l2: 1.0 / c,
        };
        let params = lbfgs(&objective, vec![0.0; classes * (dim + 1)]);
        LogisticRegression {
            classes,
            dim,
            params,
        }
    }

    /// Class scores (logits) of one row.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let (w, b) = self.params.split_at(self.classes * self.dim);
        (0..self.classes)
            .map(|k| {
                let row = &w[k * self.dim..(k + 1) * self.dim];
                (row.iter().zip(x).map(|(a, v)| a * *v as f64).sum::<f64>() + b[k]) as f32
            })
            .collect()
    }

    /// The most likely class of each row.
    pub fn predict(&self, x: &[Vec<f32>]) -> Vec<usize> {
        x.iter()
            .map(|r| super::metrics::ranking(&self.logits(r))[0])
            .collect()
    }
}

struct Objective<'a> {
    x: &'a [Vec<f64>],
    y: &'a [usize],
    classes: usize,
    dim: usize,
    l2: f64,
}

impl Objective<'_> {
    /// Loss and gradient at `p`.
    fn eval(&self, p: &[f64], grad: &mut [f64]) -> f64 {
        let (k, d) = (self.classes, self.dim);
        let (w, b) = p.split_at(k * d);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        let mut z = vec![0.0; k];
        for (xi, &yi) in self.x.iter().zip(self.y) {
            for c in 0..k {
                z[c] = w[c * d..(c + 1) * d]
                    .iter()
                    .zip(xi)
                    .map(|(a, v)| a * v)
                    .sum::<f64>()
                    + b[c];
            }
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            loss += max + sum.ln() - z[yi];
            for c in 0..k {
                let r = (z[c] - max).exp() / sum - (c == yi) as u8 as f64;
                let g = &mut grad[c * d..(c + 1) * d];
                for (gj, v) in g.iter_mut().zip(xi) {
                    *gj += r * v;
                }
                grad[k * d + c] += r;
            }
        }
        for (j, wj) in w.iter().enumerate() {
            loss += 0.5 * self.l2 * wj * wj;
            grad[j] += self.l2 * wj;
        }
        loss
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4) with a backtracking Armijo line
/// search. Stops, as SciPy's L-BFGS-B does for scikit-learn but with tighter tolerances,
/// when the largest entry of the per-sample gradient falls below 1e-7, when an iteration
/// lowers the loss by less than 1e-12 of its value, or after 5,000 iterations.
fn lbfgs(f: &Objective<'_>, mut p: Vec<f64>) -> Vec<f64> {
    const MEMORY: usize = 10;
    const MAX_ITERATIONS: usize = 5_000;
    const RELATIVE_DECREASE: f64 = 1e-12;
    let n = p.len();
    let tol = 1e-7 * f.x.len().max(1) as f64;
    let mut g = vec![0.0; n];
    let mut loss = f.eval(&p, &mut g);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut trial = vec![0.0; n];
    let mut g_trial = vec![0.0; n];
    for _ in 0..MAX_ITERATIONS {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < tol {
            break;
        }
        // Two-loop recursion: direction = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = history
            .last()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1.0), |(s, y, _)| {
                dot(s, y) / dot(y, y)
            });
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - beta) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &dir);
        let dir = if slope < 0.0 {
            dir
        } else {
            history.clear();
            g.iter().map(|v| -v).collect()
        };
        let slope = dot(&g, &dir);
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..60 {
            trial
                .iter_mut()
                .zip(&p)
                .zip(&dir)
                .for_each(|((t, pi), di)| *t = pi + step * di);
            let l = f.eval(&trial, &mut g_trial);
            if l <= loss + 1e-4 * step * slope {
                let s: Vec<f64> = trial.iter().zip(&p).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_trial.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 {
                    if history.len() == MEMORY {
                        history.remove(0);
                    }
                    history.push((s, y, 1.0 / sy));
                }
                std::mem::swap(&mut p, &mut trial);
                std::mem::swap(&mut g, &mut g_trial);
                let decrease = loss - l;
                loss = l;
                accepted = decrease > RELATIVE_DECREASE * loss.abs().max(1.0);
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break; // no step lowers the loss appreciably: converged
        }
    }
    p
}

/// The outcome of a linear probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// `(C, validation accuracy)` for every C tried.
    pub validation: Vec<(f64, f64)>,
    /// The C chosen (best validation accuracy; the smallest C among ties).
    pub c: f64,
    /// Test-set metrics of the model refitted on train + validation with that C.
    pub test: ClassificationReport,
}

/// Fits on `train`, picks C on `val`, refits on both and scores `test`. Each split is
/// `(embeddings, labels)`.
pub fn linear_probe(
    train: (&[Vec<f32>], &[usize]),
    val: (&[Vec<f32>], &[usize]),
    test: (&[Vec<f32>], &[usize]),
    classes: usize,
) -> ProbeReport {
    let accuracy = |m: &LogisticRegression, x: &[Vec<f32>], y: &[usize]| {
        let hits = m.predict(x).iter().zip(y).filter(|(p, t)| p == t).count();
        hits as f64 / y.len().max(1) as f64
    };
    let validation: Vec<(f64, f64)> = c_grid()
        .into_iter()
        .map(|c| {
            let m = LogisticRegression::fit(train.0, train.1, classes, c);
            (c, accuracy(&m, val.0, val.1))
        })
        .collect();
    let (c, _) = validation
        .iter()
        .copied()
        .fold((f64::NAN, f64::NEG_INFINITY), |best, (c, a)| {
            if a > best.1 {
                (c, a)
            } else {
                best
            }
        });
    let x: Vec<Vec<f32>> = train.0.iter().chain(val.0).cloned().collect();
    let y: Vec<usize> = train.1.iter().chain(val.1).copied().collect();
    let model = LogisticRegression::fit(&x, &y, classes, c);
    let logits: Vec<Vec<f32>> = test.0.iter().map(|r| model.logits(r)).collect();
    ProbeReport {
        validation,
        c,
        test: ClassificationReport::from_logits(&logits, test.1, classes),
    }
}

/// Indices per class, each class shuffled by a ChaCha8 generator seeded with `seed`.
fn shuffled_by_class(labels: &[usize], seed: u64) -> Vec<Vec<usize>> {
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for members in &mut by_class {
        members.shuffle(&mut rng);
    }
    by_class
}

/// Splits sample indices into `(train, validation)`: per class, `round(fraction * n)`
/// samples (at least one when the class has two or more) go to validation.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for members in shuffled_by_class(labels, seed) {
        let n = members.len();
        let mut k = (fraction * n as f64).round() as usize;
        if n >= 2 {
            k = k.clamp(1, n - 1);
        } else {
            k = 0;
        }
        val.extend_from_slice(&members[..k]);
        train.extend_from_slice(&members[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// k-shot sampling: per class, `k` samples for training and up to `k` of the rest for
/// validation (fewer when the class is small).
pub fn k_shot(labels: &[usize], k: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for members in shuffled_by_class(labels, seed) {
        let t = k.min(members.len());
        train.extend_from_slice(&members[..t]);
        let v = k.min(members.len() - t);
        val.extend_from_slice(&members[t..t + v]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separable blobs in 2-D.
    fn blobs() -> (Vec<Vec<f32>>, Vec<usize>) {
        let centres = [[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]];
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for i in 0..10 {
                let t = i as f32 * 0.37;
                x.push(vec![centre[0] + 0.2 * t.sin(), centre[1] + 0.2 * t.cos()]);
                y.push(c);
            }
        }
        (x, y)
    }

    fn to_f64(x: &[Vec<f32>]) -> Vec<Vec<f64>> {
        x.iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    }

    /// The objective of the 3-class 2-D blobs with L2 weight `l2` (= 1 / C).
    fn objective<'a>(x: &'a [Vec<f64>], y: &'a [usize], l2: f64) -> Objective<'a> {
        Objective {
            x,
            y,
            classes: 3,
            dim: 2,
            l2,
        }
    }

    #[test]
    fn the_fit_reaches_a_stationary_point() {
        let (x, y) = blobs();
        let m = LogisticRegression::fit(&x, &y, 3, 10.0);
        let x64 = to_f64(&x);
        let f = objective(&x64, &y, 0.1);
        let mut g = vec![0.0; m.params.len()];
        f.eval(&m.params, &mut g);
        assert!(g.iter().all(|v| v.abs() < 1e-5), "{g:?}");
        assert_eq!(m.predict(&x), y);
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (x, y) = blobs();
        let x64 = to_f64(&x);
        let f = objective(&x64, &y, 0.5);
        let p: Vec<f64> = (0..9).map(|i| (i as f64 * 0.7).sin()).collect();
        let mut g = vec![0.0; 9];
        f.eval(&p, &mut g);
        let mut scratch = vec![0.0; 9];
        for j in 0..9 {
            let (mut a, mut b) = (p.clone(), p.clone());
            a[j] += 1e-6;
            b[j] -= 1e-6;
            let numeric = (f.eval(&a, &mut scratch) - f.eval(&b, &mut scratch)) / 2e-6;
            assert!((numeric - g[j]).abs() < 1e-5, "{j}: {numeric} vs {}", g[j]);
        }
    }

    #[test]
    fn splits_are_stratified_disjoint_and_seeded() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let (train, val) = stratified_split(&labels, 0.2, 7);
        assert_eq!((train.len(), val.len()), (24, 6));
        assert!(train.iter().all(|i| !val.contains(i)));
        for c in 0..3 {
            assert_eq!(val.iter().filter(|&&i| labels[i] == c).count(), 2);
        }
        assert_eq!(stratified_split(&labels, 0.2, 7), (train, val));
        let (t, v) = k_shot(&labels, 4, 1);
        assert_eq!((t.len(), v.len()), (12, 12));
        assert_ne!(k_shot(&labels, 4, 2).0, t);
    }
}
