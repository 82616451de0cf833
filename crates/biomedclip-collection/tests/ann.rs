//! The HNSW graph against exact search on clustered unit vectors spread over several parts:
//! recall@10 of every quantization, and exact scores for the rows a quantized graph finds.

use std::path::Path;

use biomedclip_collection::ann::{self, Ann, AnnParams, Quantization};
use biomedclip_collection::manifest::{Manifest, ModelId};
use biomedclip_collection::metadata::{Columns, Row};
use biomedclip_collection::npy::Dtype;
use biomedclip_collection::search::exact;
use biomedclip_collection::{Collection, FolderWriter, Target};

const DIM: usize = 64;
const K: usize = 10;

/// Deterministic numbers in [-1, 1) (a linear congruential generator is enough here).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `rows` vectors around 50 centres (centre + noise, normalised).
fn clustered(rng: &mut Lcg, centres: &[Vec<f32>], rows: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|i| {
            let c = &centres[i * 7919 % centres.len()];
            unit(c.iter().map(|x| x + 0.25 * rng.next()).collect())
        })
        .collect()
}

fn write_collection(dir: &Path, parts: &[&[Vec<f32>]]) {
    let model = ModelId {
        name: "synthetic".into(),
        weights_blake3: "0".repeat(64),
    };
    let manifest = Manifest::new(model, "f32", DIM, Dtype::F16, &Columns::default());
    let mut writer = FolderWriter::open(dir, &manifest).unwrap();
    for (n, rows) in parts.iter().enumerate() {
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        let meta: Vec<Row> = (0..rows.len())
            .map(|i| Row {
                image_path: format!("/synthetic/{n}/{i}.png"),
                caption: None,
                blake3: format!("{n}-{i}"),
                size: 0,
                dicom: vec![None; 6],
                extra: Vec::new(),
            })
            .collect();
        writer.append(&meta, &values, None, &[]).unwrap();
    }
}

#[test]
fn every_quantization_finds_what_exact_search_finds() {
    let mut rng = Lcg(7);
    let centres: Vec<Vec<f32>> = (0..50)
        .map(|_| unit((0..DIM).map(|_| rng.next()).collect()))
        .collect();
    let rows = clustered(&mut rng, &centres, 3000);
    let queries = clustered(&mut rng, &centres, 100);
    let tmp = tempfile::tempdir().unwrap();
    write_collection(
        tmp.path(),
        &[&rows[..1000], &rows[1000..2200], &rows[2200..]],
    );
    let collection = Collection::open(tmp.path()).unwrap();
    assert_eq!(collection.len(), 3000);
    let truth = exact(&collection, &queries, K, Target::Images, None).unwrap();

    for quantization in [Quantization::F32, Quantization::F16, Quantization::I8] {
        let params = AnnParams {
            quantization,
            ..AnnParams::default()
        };
        ann::build(&collection, &params, &|_| {}).unwrap();
        let index = Ann::open(&collection).unwrap();
        let found = index
            .search(&collection, &queries, K, Some(64), None)
            .unwrap();
        let mut hits = 0;
        for (f, t) in found.iter().zip(&truth) {
            assert_eq!(f.len(), K);
            hits += f.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count();
            // Best first, and a quantized graph's scores are the exact ones.
            assert!(f.windows(2).all(|w| w[0].score >= w[1].score));
            if quantization != Quantization::F32 {
                for h in f {
                    if let Some(x) = t.iter().find(|x| x.id == h.id) {
                        assert!(
                            (x.score - h.score).abs() < 1e-5,
                            "{quantization:?} {h:?} {x:?}"
                        );
                    }
                }
            }
        }
        let recall = hits as f64 / (K * queries.len()) as f64;
        assert!(recall >= 0.98, "{quantization:?}: recall@10 {recall}");
    }
}
