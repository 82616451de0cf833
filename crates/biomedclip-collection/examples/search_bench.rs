//! Search speed on synthetic embeddings, the half of `tools/bench/search.py` that measures
//! this crate (the other half runs faiss on the same files).
//!
//! `search_bench generate DIR ROWS QUERIES` writes a collection of ROWS unit vectors of 512
//! dimensions, clustered like real embeddings (a few thousand centres, each row a centre plus
//! noise), and `DIR/queries.npy` (queries drawn the same way). `search_bench exact DIR` times
//! exact top-10 at batch 1 and 64; `search_bench hnsw DIR M EF_CONSTRUCTION EF...` builds the
//! HNSW graph and times searches at each ef with their recall@10 against exact.
//! `search_bench postgres DIR URL M EF_CONSTRUCTION EF...` writes the same collection into
//! PostgreSQL + pgvector through the crate's writer, times exact search there against ours,
//! then pgvector's HNSW build and its searches at each ef. Each prints one JSON object.

use std::path::{Path, PathBuf};
use std::time::Instant;

use biomedclip_collection::ann::{self, Ann, AnnParams, Quantization};
use biomedclip_collection::manifest::{Manifest, ModelId};
use biomedclip_collection::metadata::{Columns, Row};
use biomedclip_collection::npy::{self, Dtype, Matrix};
use biomedclip_collection::search::exact;
use biomedclip_collection::{Collection, FolderWriter, Hit, Target};
use serde_json::json;

const DIM: usize = 512;
const K: usize = 10;

/// xorshift64* and Box-Muller: deterministic normal numbers without a distribution crate.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// Rows clustered around `centres`: centre + noise, normalised.
fn clustered(rng: &mut Normal, centres: &[Vec<f32>], rows: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * DIM);
    for _ in 0..rows {
        let c = &centres[(rng.uniform() * centres.len() as f64) as usize % centres.len()];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.05 * rng.next()).collect();
        unit(&mut v);
        out.extend(v);
    }
    out
}

fn write_collection(dir: &Path, values: &[f32]) {
    let model = ModelId {
        name: "synthetic".into(),
        weights_blake3: "0".repeat(64),
    };
    let manifest = Manifest::new(model, "f32", DIM, Dtype::F32, &Columns::default());
    let mut writer = FolderWriter::open(dir, &manifest).unwrap();
    let rows: Vec<Row> = (0..values.len() / DIM)
        .map(|i| Row {
            image_path: format!("/synthetic/{i}.png"),
            caption: None,
            blake3: i.to_string(),
            size: 0,
            dicom: vec![None; 6],
            extra: Vec::new(),
        })
        .collect();
    writer.append(&rows, values, None, &[]).unwrap();
}

fn queries(dir: &Path) -> Vec<Vec<f32>> {
    let m = Matrix::open(&dir.join("queries.npy")).unwrap();
    m.rows_f32(0..m.rows())
        .chunks(DIM)
        .map(<[f32]>::to_vec)
        .collect()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn ids(hits: &[Vec<Hit>]) -> Vec<Vec<usize>> {
    hits.iter()
        .map(|h| h.iter().map(|x| x.id).collect())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[2]);
    match args[1].as_str() {
        "generate" => {
            let rows: usize = args[3].parse().unwrap();
            let nq: usize = args[4].parse().unwrap();
            let mut rng = Normal(0x853c49e6748fea9b);
            let centres: Vec<Vec<f32>> = (0..2048)
                .map(|_| {
                    let mut c: Vec<f32> = (0..DIM).map(|_| rng.next()).collect();
                    unit(&mut c);
                    c
                })
                .collect();
            let base = clustered(&mut rng, &centres, rows);
            write_collection(&dir, &base);
            let q = clustered(&mut rng, &centres, nq);
            let mut file =
                std::io::BufWriter::new(std::fs::File::create(dir.join("queries.npy")).unwrap());
            npy::write(&mut file, Dtype::F32, DIM, &q).unwrap();
        }
        "exact" => {
            let started = Instant::now();
            let collection = Collection::open(&dir).unwrap();
            let open_s = started.elapsed().as_secs_f64();
            let q = queries(&dir);
            // Warm the page cache and the thread pool once, as faiss's index holds its copy.
            exact(&collection, &q[..1], K, Target::Images, None).unwrap();
            let singles = 100.min(q.len());
            let t = Instant::now();
            for query in &q[..singles] {
                exact(
                    &collection,
                    std::slice::from_ref(query),
                    K,
                    Target::Images,
                    None,
                )
                .unwrap();
            }
            let b1_ms = t.elapsed().as_secs_f64() * 1000.0 / singles as f64;
            let batches = (q.len() / 64).min(10);
            let t = Instant::now();
            for b in 0..batches {
                exact(
                    &collection,
                    &q[b * 64..(b + 1) * 64],
                    K,
                    Target::Images,
                    None,
                )
                .unwrap();
            }
            let b64_ms = t.elapsed().as_secs_f64() * 1000.0 / batches as f64;
            println!(
                "{}",
                json!({"rows": collection.len(), "open_s": open_s, "b1_ms": b1_ms, "b64_ms": b64_ms,
                       "peak_rss_mb": peak_rss_mb()})
            );
        }
        "hnsw" => {
            let m: usize = args[3].parse().unwrap();
            let ef_construction: usize = args[4].parse().unwrap();
            let efs: Vec<usize> = args[5..].iter().map(|e| e.parse().unwrap()).collect();
            let collection = Collection::open(&dir).unwrap();
            let q = queries(&dir);
            let truth = ids(&exact(&collection, &q, K, Target::Images, None).unwrap());
            let params = AnnParams {
                connectivity: m,
                expansion_add: ef_construction,
                expansion_search: 64,
                quantization: std::env::var("QUANT")
                    .ok()
                    .map_or(Quantization::F32, |q| q.parse().unwrap()),
            };
            let t = Instant::now();
            ann::build(&collection, &params, &|_| {}).unwrap();
            let build_s = t.elapsed().as_secs_f64();
            let index = Ann::open(&collection).unwrap();
            let mut runs = Vec::new();
            for ef in efs {
                index
                    .search(&collection, &q[..1], K, Some(ef), None)
                    .unwrap();
                let t = Instant::now();
                let found = index.search(&collection, &q, K, Some(ef), None).unwrap();
                let secs = t.elapsed().as_secs_f64();
                let hits: usize = ids(&found)
                    .iter()
                    .zip(&truth)
                    .map(|(f, t)| f.iter().filter(|i| t.contains(i)).count())
                    .sum();
                runs.push(json!({"ef": ef, "qps": q.len() as f64 / secs,
                                 "recall_at_10": hits as f64 / (K * q.len()) as f64}));
            }
            println!(
                "{}",
                json!({"rows": collection.len(), "m": m, "ef_construction": ef_construction,
                       "build_s": build_s, "runs": runs, "peak_rss_mb": peak_rss_mb(),
                       "simd": index.hardware_acceleration()})
            );
        }
        "postgres" => postgres_bench(&dir, &args[3..]),
        other => panic!("unknown mode {other}: generate, exact, hnsw or postgres"),
    }
}

/// The collection of `dir` in a database: insert rate, exact latency beside ours, HNSW build
/// and QPS with recall@10 against exact.
fn postgres_bench(dir: &Path, args: &[String]) {
    use biomedclip_collection::postgres::{create_hnsw, Database, PgCollection, PgWriter};

    let database = Database::parse(&args[0]).unwrap();
    let m: usize = args[1].parse().unwrap();
    let ef_construction: usize = args[2].parse().unwrap();
    let efs: Vec<usize> = args[3..].iter().map(|e| e.parse().unwrap()).collect();
    let collection = Collection::open(dir).unwrap();
    let q: Vec<Vec<f32>> = queries(dir).into_iter().take(200).collect();
    let truth = ids(&exact(&collection, &q, K, Target::Images, None).unwrap());
    let truth_paths: Vec<Vec<String>> = truth
        .iter()
        .map(|t| {
            t.iter()
                .map(|&i| collection.image_path(i).unwrap().to_string())
                .collect()
        })
        .collect();

    let name = "search_bench";
    let mut client = database.connect().unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}; DROP TABLE IF EXISTS {name}__failed;
             DO $$ BEGIN IF to_regclass('biomedclip_collections') IS NOT NULL THEN
                 DELETE FROM biomedclip_collections WHERE name = '{name}'; END IF; END $$;"
        ))
        .unwrap();
    let mut writer = PgWriter::open(&database, name, collection.manifest()).unwrap();
    let rows: Vec<Row> = (0..collection.len())
        .map(|i| Row {
            image_path: collection.image_path(i).unwrap().to_string(),
            caption: None,
            blake3: format!("{i:064x}"),
            size: 0,
            dicom: vec![None; 6],
            extra: Vec::new(),
        })
        .collect();
    let t = Instant::now();
    let values = collection.parts()[0].images.rows_f32(0..collection.len());
    for (chunk, emb) in rows.chunks(10_000).zip(values.chunks(10_000 * DIM)) {
        writer.insert(chunk, emb, None, &[]).unwrap();
    }
    let insert_s = t.elapsed().as_secs_f64();
    client
        .batch_execute(&format!("VACUUM ANALYZE {name}"))
        .unwrap();

    let pg = PgCollection::open(&database, name, 1).unwrap();
    let singles = 20.min(q.len());
    pg.search(&q[..1], K, Target::Images, None, None).unwrap();
    let t = Instant::now();
    let mut same = 0;
    for (query, want) in q[..singles].iter().zip(&truth_paths) {
        let got = pg
            .search(std::slice::from_ref(query), K, Target::Images, None, None)
            .unwrap();
        same += got[0]
            .iter()
            .filter(|f| want.contains(f.path.as_ref().unwrap()))
            .count();
    }
    let pg_exact_ms = t.elapsed().as_secs_f64() * 1000.0 / singles as f64;
    exact(&collection, &q[..1], K, Target::Images, None).unwrap();
    let t = Instant::now();
    for query in &q[..singles] {
        exact(
            &collection,
            std::slice::from_ref(query),
            K,
            Target::Images,
            None,
        )
        .unwrap();
    }
    let ours_exact_ms = t.elapsed().as_secs_f64() * 1000.0 / singles as f64;

    let t = Instant::now();
    create_hnsw(&database, name, m, ef_construction).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for ef in efs {
        pg.search(&q[..1], K, Target::Images, None, Some(Some(ef)))
            .unwrap();
        let t = Instant::now();
        let found = pg
            .search(&q, K, Target::Images, None, Some(Some(ef)))
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let hits: usize = found
            .iter()
            .zip(&truth_paths)
            .map(|(f, want)| {
                f.iter()
                    .filter(|x| want.contains(x.path.as_ref().unwrap()))
                    .count()
            })
            .sum();
        runs.push(json!({"ef": ef, "qps": q.len() as f64 / secs,
                         "recall_at_10": hits as f64 / (K * q.len()) as f64}));
    }
    println!(
        "{}",
        json!({"rows": collection.len(), "insert_s": insert_s,
               "insert_rows_per_s": collection.len() as f64 / insert_s,
               "pg_exact_b1_ms": pg_exact_ms, "ours_exact_b1_ms": ours_exact_ms,
               "pg_exact_agreement": same as f64 / (K * singles) as f64,
               "m": m, "ef_construction": ef_construction, "hnsw_build_s": build_s, "runs": runs})
    );
}
