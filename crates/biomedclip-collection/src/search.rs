//! Exact top-k search: every row of every part scored against every query, with the
//! memory-mapped rows multiplied block by block (a GEMM per block of rows, f16 rows widened
//! to f32 first) on all cores, each worker keeping its own top-k, merged at the end.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::collection::{Collection, Target};
use crate::error::{Error, Result};

/// Rows scored per task: the block (768 KB of f32 at 512 dimensions) stays in L2 while all
/// queries of a batch pass over it.
const BLOCK_ROWS: usize = 384;

/// One result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row of the collection.
    pub id: usize,
    /// Cosine similarity to the query (the embeddings are L2-normalised).
    pub score: f32,
}

impl Eq for Hit {}

impl Ord for Hit {
    /// Better first: higher score, then lower id (so ties rank the same on every run).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` hits seen so far (a max-heap on "worse", so the worst is on top).
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl TopK {
    /// Empty, keeping `k`.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(worst) = self.heap.peek() {
            if hit < *worst {
                self.heap.pop();
                self.heap.push(hit);
            }
        }
    }

    /// The lowest score that still gets in (-inf while not full).
    #[inline]
    fn bar(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |h| h.score)
        }
    }

    /// Merges another.
    pub fn merge(mut self, other: TopK) -> TopK {
        for hit in other.heap {
            self.push(hit);
        }
        self
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec()
    }
}

/// Scores `queries` (each `dim` long) against every row of `target` and returns the best `k`
/// of each, best first; rows where `allowed` is false are left out.
pub fn exact(
    collection: &Collection,
    queries: &[Vec<f32>],
    k: usize,
    target: Target,
    allowed: Option<&[bool]>,
) -> Result<Vec<Vec<Hit>>> {
    let dim = collection.dim();
    if let Some(q) = queries.iter().find(|q| q.len() != dim) {
        return Err(Error::Invalid(format!(
            "a query has {} dimensions; the collection's embeddings have {dim}",
            q.len()
        )));
    }
    if k == 0 || queries.is_empty() {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    let mut blocks = Vec::new();
    for part in collection.parts() {
        let m = collection.matrix(part, target)?;
        for start in (0..m.rows()).step_by(BLOCK_ROWS) {
            blocks.push((m, part.offset, start, (start + BLOCK_ROWS).min(m.rows())));
        }
    }
    let nq = queries.len();
    let flat: Vec<f32> = queries.concat();
    let empty = || (vec![TopK::new(k); nq], Vec::<f32>::new());
    let (tops, _) = blocks
        .par_iter()
        .fold(empty, |(mut tops, mut scores), &(m, offset, start, end)| {
            let rows = m.rows_f32(start..end);
            let n = end - start;
            scores.resize(nq * n, 0.0);
            // SAFETY: `flat` is nq x dim row-major, `rows` n x dim row-major (read as its
            // transpose, dim x n, with column stride dim), `scores` nq x n row-major; all
            // three are sized so (checked above and by `rows_f32`).
            unsafe {
                gemm::gemm(
                    nq,
                    n,
                    dim,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    flat.as_ptr(),
                    1,
                    dim as isize,
                    rows.as_ptr(),
                    dim as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (q, top) in tops.iter_mut().enumerate() {
                let row_scores = &scores[q * n..(q + 1) * n];
                let mut bar = top.bar();
                for (r, &score) in row_scores.iter().enumerate() {
                    let id = offset + start + r;
                    if score >= bar && allowed.is_none_or(|a| a[id]) {
                        top.push(Hit { id, score });
                        bar = top.bar();
                    }
                }
            }
            (tops, scores)
        })
        .reduce(empty, |(a, s), (b, _)| {
            (a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(), s)
        });
    Ok(tops.into_iter().map(TopK::into_sorted).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_id() {
        let mut top = TopK::new(3);
        for (id, score) in [(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.1), (4, 0.9), (5, 0.7)] {
            top.push(Hit { id, score });
        }
        let ids: Vec<usize> = top.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(ids, [1, 4, 5]);
    }
}
