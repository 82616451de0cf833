//! `biomedclip eval zero-shot | retrieval | linear-probe`: metrics on labelled data, defined
//! as LAION's CLIP_benchmark defines them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use biomedclip::cache::{
    default_root, encode_images_cached, encode_texts_cached, CacheStats, EmbeddingCache,
};
use biomedclip::eval::probe::{k_shot, stratified_split};
use biomedclip::eval::{
    class_embeddings, heatmap, linear_probe, CaptionPairs, Classes, ClassificationReport,
    LabelledImages, RetrievalReport,
};
use biomedclip::BiomedClip;
use clap::{Arg, ArgAction, ArgMatches, Command as ClapCommand};
use serde_json::{json, Value};

use crate::args::{common, common_args, image_args, image_options, Common, ImageOptions};
use crate::embed::progress_bar;

/// The model card's template, with `{c}` for the class name.
const DEFAULT_TEMPLATE: &str = "this is a photo of {c}";

/// What to evaluate.
pub enum Task {
    /// Zero-shot classification of labelled images.
    ZeroShot {
        /// Folder of class folders or `path,label` CSV.
        data: PathBuf,
        /// Prompt templates, each with `{c}`.
        templates: Vec<String>,
    },
    /// Image-text retrieval over an `image,caption` CSV.
    Retrieval {
        /// The pairs.
        pairs: PathBuf,
        /// Recall cut-offs.
        ks: Vec<usize>,
    },
    /// Logistic regression on frozen image embeddings.
    LinearProbe {
        /// Training data.
        train: PathBuf,
        /// Test data.
        test: PathBuf,
        /// Validation data (else split from train).
        val: Option<PathBuf>,
        /// Share of each training class held out for validation.
        val_fraction: f64,
        /// Samples per class drawn from train (the validation split from the rest).
        k_shot: Option<usize>,
        /// Seed of the sampling.
        seed: u64,
    },
}

/// `eval` options.
pub struct Eval {
    common: Common,
    images: ImageOptions,
    task: Task,
    classes: Option<PathBuf>,
    json: bool,
    out: Option<PathBuf>,
    cache: Option<PathBuf>,
}

fn shared(cmd: ClapCommand) -> ClapCommand {
    image_args(common_args(cmd))
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the results as JSON"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .help("Also write metrics.json (and confusion.csv/.png, predictions.csv) here"),
        )
        .arg(
            Arg::new("cache-dir")
                .long("cache-dir")
                .value_name("DIR")
                .help("Embedding cache (default: $BIOMEDCLIP_CACHE, else ~/.cache/biomedclip)"),
        )
        .arg(
            Arg::new("no-cache")
                .long("no-cache")
                .action(ArgAction::SetTrue)
                .conflicts_with("cache-dir")
                .help("Encode everything; read and write no cache"),
        )
}

fn classes_arg() -> Arg {
    Arg::new("classes")
        .long("classes")
        .value_name("JSON")
        .help("Class names: {\"label\": \"name\", ...} or [\"name0\", ...] for integer labels")
}

/// The `eval` subcommand.
pub fn command() -> ClapCommand {
    ClapCommand::new("eval")
        .about("Evaluate on labelled data (CLIP_benchmark definitions)")
        .subcommand_required(true)
        .subcommand(
            shared(ClapCommand::new("zero-shot"))
                .about("Zero-shot classification: top-1/top-5, balanced accuracy, confusion")
                .arg(classes_arg())
                .arg(
                    Arg::new("templates")
                        .long("templates")
                        .value_name("FILE")
                        .help("Prompt templates, one per line, {c} for the class name"),
                )
                .arg(
                    Arg::new("template")
                        .long("template")
                        .value_name("T")
                        .action(ArgAction::Append)
                        .conflicts_with("templates")
                        .help("A prompt template with {c} (repeatable; default: the model card's)"),
                )
                .arg(
                    Arg::new("data")
                        .value_name("DATA")
                        .required(true)
                        .help("A folder of class folders, or a CSV with path,label columns"),
                ),
        )
        .subcommand(
            shared(ClapCommand::new("retrieval"))
                .about("Image-text retrieval: recall@k both ways")
                .arg(
                    Arg::new("k")
                        .long("k")
                        .value_name("K,...")
                        .default_value("1,5,10")
                        .help("Recall cut-offs"),
                )
                .arg(
                    Arg::new("pairs")
                        .value_name("CSV")
                        .required(true)
                        .help("image,caption rows (several captions per image allowed)"),
                ),
        )
        .subcommand(
            shared(ClapCommand::new("linear-probe"))
                .about("Logistic regression on frozen image embeddings, L2 chosen on validation")
                .arg(classes_arg())
                .arg(
                    Arg::new("train")
                        .long("train")
                        .value_name("DATA")
                        .required(true)
                        .help("Training data: folder of class folders or path,label CSV"),
                )
                .arg(
                    Arg::new("test")
                        .long("test")
                        .value_name("DATA")
                        .required(true)
                        .help("Test data"),
                )
                .arg(
                    Arg::new("val")
                        .long("val")
                        .value_name("DATA")
                        .conflicts_with("k-shot")
                        .help("Validation data (default: held out from the training data)"),
                )
                .arg(
                    Arg::new("val-fraction")
                        .long("val-fraction")
                        .value_name("F")
                        .default_value("0.2")
                        .value_parser(clap::value_parser!(f64))
                        .help("Share of each training class held out for validation"),
                )
                .arg(
                    Arg::new("k-shot")
                        .long("k-shot")
                        .value_name("K")
                        .value_parser(clap::value_parser!(usize))
                        .help("Train on K samples per class (validate on up to K others)"),
                )
                .arg(
                    Arg::new("seed")
                        .long("seed")
                        .value_name("N")
                        .default_value("0")
                        .value_parser(clap::value_parser!(u64))
                        .help("Seed of the validation split and k-shot sampling"),
                ),
        )
}

fn read_templates(path: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read templates {path}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.contains("{c}") {
            bail!("{path} line {}: template has no {{c}}: {line:?}", i + 1);
        }
        out.push(line.to_string());
    }
    if out.is_empty() {
        bail!("{path}: no templates");
    }
    Ok(out)
}

/// Validates the `eval` arguments.
pub fn parse(m: &ArgMatches) -> Result<Eval> {
    let (name, sub) = m.subcommand().expect("clap requires a subcommand");
    let path = |id: &str| sub.get_one::<String>(id).map(PathBuf::from);
    let task = match name {
        "zero-shot" => {
            let templates = match sub.get_one::<String>("templates") {
                Some(f) => read_templates(f)?,
                None => match sub.get_many::<String>("template") {
                    Some(t) => t.cloned().collect(),
                    None => vec![DEFAULT_TEMPLATE.to_string()],
                },
            };
            if let Some(t) = templates.iter().find(|t| !t.contains("{c}")) {
                bail!("template {t:?} has no {{c}} for the class name");
            }
            Task::ZeroShot {
                data: path("data").expect("required"),
                templates,
            }
        }
        "retrieval" => {
            let ks = sub
                .get_one::<String>("k")
                .expect("has a default")
                .split(',')
                .map(|k| match k.trim().parse::<usize>() {
                    Ok(k) if k > 0 => Ok(k),
                    _ => bail!("--k: {k:?} is not a positive integer"),
                })
                .collect::<Result<Vec<_>>>()?;
            Task::Retrieval {
                pairs: path("pairs").expect("required"),
                ks,
            }
        }
        _ => {
            let val_fraction = *sub.get_one::<f64>("val-fraction").expect("has a default");
            if !(0.0..1.0).contains(&val_fraction) || val_fraction == 0.0 {
                bail!("--val-fraction must be in (0, 1)");
            }
            let k = sub.get_one::<usize>("k-shot").copied();
            if k == Some(0) {
                bail!("--k-shot must be at least 1");
            }
            Task::LinearProbe {
                train: path("train").expect("required"),
                test: path("test").expect("required"),
                val: path("val"),
                val_fraction,
                k_shot: k,
                seed: *sub.get_one::<u64>("seed").expect("has a default"),
            }
        }
    };
    let cache = if sub.get_flag("no-cache") {
        None
    } else {
        Some(path("cache-dir").unwrap_or_else(default_root))
    };
    Ok(Eval {
        common: common(sub)?,
        images: image_options(sub)?,
        task,
        classes: sub
            .try_get_one::<String>("classes")
            .ok()
            .flatten()
            .map(PathBuf::from),
        json: sub.get_flag("json"),
        out: path("out"),
        cache,
    })
}

/// Loaded model, its cache, and the failures met so far.
struct Session {
    model: BiomedClip,
    cache: Option<EmbeddingCache>,
    failed: Vec<(String, String)>,
    stats: CacheStats,
}

impl Session {
    /// Embeddings of `paths`; failures are reported and recorded, leaving `None`.
    fn images(&mut self, paths: &[PathBuf]) -> Vec<Option<Vec<f32>>> {
        let bar = progress_bar(paths.len(), "images");
        let (results, stats) = encode_images_cached(&self.model, self.cache.as_ref(), paths, |n| {
            bar.inc(n as u64)
        });
        bar.finish_and_clear();
        self.stats.hits += stats.hits;
        self.stats.encoded += stats.encoded;
        paths
            .iter()
            .zip(results)
            .map(|(p, r)| match r {
                Ok(e) => Some(e),
                Err(e) => {
                    eprintln!("error: {e}");
                    self.failed.push((p.display().to_string(), e.to_string()));
                    None
                }
            })
            .collect()
    }

    fn texts(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let (e, stats) = encode_texts_cached(&self.model, self.cache.as_ref(), texts)?;
        self.stats.hits += stats.hits;
        self.stats.encoded += stats.encoded;
        Ok(e)
    }
}

/// Runs the evaluation and prints the results.
pub fn run(args: Eval) -> Result<ExitCode> {
    let (files, mut model) = args.common.load_model_and_files()?;
    model.set_rendering(args.images.rendering);
    let cache = match &args.cache {
        Some(root) => Some(
            EmbeddingCache::open(root, &files, &model)
                .with_context(|| format!("cannot open the embedding cache {}", root.display()))?,
        ),
        None => None,
    };
    let mut session = Session {
        model,
        cache,
        failed: Vec::new(),
        stats: CacheStats::default(),
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let glob = args.images.glob.as_deref();
    let mut result = match &args.task {
        Task::ZeroShot { data, templates } => {
            zero_shot(&mut session, data, templates, &args, glob)?
        }
        Task::Retrieval { pairs, ks } => retrieval(&mut session, pairs, ks)?,
        Task::LinearProbe { .. } => probe(&mut session, &args, glob)?,
    };
    result["model"] = json!(args.common.model.to_string());
    result["failed"] = json!(session
        .failed
        .iter()
        .map(|(p, e)| json!({"path": p, "error": e}))
        .collect::<Vec<_>>());
    result["cache"] = json!({
        "hits": session.stats.hits,
        "encoded": session.stats.encoded,
        "dir": session.cache.as_ref().map(|c| c.dir().display().to_string()),
    });
    if let Some(dir) = &args.out {
        let path = dir.join("metrics.json");
        std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_summary(&result);
    }
    if !session.failed.is_empty() {
        eprintln!(
            "{} image(s) could not be read and were left out of the metrics",
            session.failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Embeddings with the (path, class) of each.
type Embedded = (Vec<Vec<f32>>, Vec<(PathBuf, usize)>);

/// Keeps the rows whose embedding exists.
fn present<T: Clone>(emb: &[Option<Vec<f32>>], items: &[T]) -> (Vec<Vec<f32>>, Vec<T>) {
    emb.iter()
        .zip(items)
        .filter_map(|(e, t)| Some((e.clone()?, t.clone())))
        .unzip()
}

fn report_json(r: &ClassificationReport, names: &[String]) -> Value {
    json!({
        "samples": r.samples,
        "top1": r.top1,
        "top5": r.top5,
        "balanced_accuracy": r.balanced_accuracy,
        "per_class_recall": names.iter().zip(&r.per_class_recall)
            .map(|(n, v)| json!({"class": n, "recall": v}))
            .collect::<Vec<_>>(),
        "confusion": r.confusion,
    })
}

fn write_confusion(
    dir: &Path,
    r: &ClassificationReport,
    names: &[String],
    title: &str,
) -> Result<()> {
    let csv = dir.join("confusion.csv");
    std::fs::write(&csv, r.confusion_csv(names))
        .with_context(|| format!("cannot write {}", csv.display()))?;
    heatmap::write_png(&dir.join("confusion.png"), &r.confusion, names, title)?;
    Ok(())
}

fn load_labelled(path: &Path, glob: Option<&str>) -> Result<LabelledImages> {
    let d = LabelledImages::load(path, glob)
        .with_context(|| format!("cannot read data {}", path.display()))?;
    if !d.skipped.is_empty() {
        eprintln!(
            "{}: skipped {} non-image file(s), e.g. {}",
            path.display(),
            d.skipped.len(),
            d.skipped[0].display()
        );
    }
    if d.images.is_empty() {
        bail!("{}: no images", path.display());
    }
    Ok(d)
}

fn zero_shot(
    s: &mut Session,
    data: &Path,
    templates: &[String],
    args: &Eval,
    glob: Option<&str>,
) -> Result<Value> {
    let d = load_labelled(data, glob)?;
    let classes = Classes::new(&d.labels, args.classes.as_deref())?;
    let targets = classes.indices(&d.labels)?;
    let prompts: Vec<String> = classes
        .names
        .iter()
        .flat_map(|c| templates.iter().map(move |t| t.replace("{c}", c)))
        .collect();
    let text = s.texts(&prompts)?;
    let per_class: Vec<Vec<Vec<f32>>> = text.chunks(templates.len()).map(<[_]>::to_vec).collect();
    let weights = class_embeddings(&per_class);
    let emb = s.images(&d.images);
    let items: Vec<(PathBuf, usize)> = d.images.iter().cloned().zip(targets).collect();
    let (x, kept) = present(&emb, &items);
    let y: Vec<usize> = kept.iter().map(|(_, t)| *t).collect();
    let logits = biomedclip::eval::metrics::similarities(&x, &weights);
    let report = ClassificationReport::from_logits(&logits, &y, classes.names.len());
    if let Some(dir) = &args.out {
        write_confusion(dir, &report, &classes.names, "zero-shot confusion")?;
        let mut csv = String::from("path,label,predicted\n");
        for ((path, t), row) in kept.iter().zip(&logits) {
            let p = biomedclip::eval::metrics::ranking(row)[0];
            csv.push_str(&format!(
                "{},{},{}\n",
                path.display(),
                classes.labels[*t],
                classes.labels[p]
            ));
        }
        std::fs::write(dir.join("predictions.csv"), csv)?;
    }
    Ok(json!({
        "task": "zero-shot",
        "data": data.display().to_string(),
        "classes": classes.names,
        "templates": templates,
        "metrics": report_json(&report, &classes.names),
    }))
}

fn retrieval(s: &mut Session, pairs: &Path, ks: &[usize]) -> Result<Value> {
    let p =
        CaptionPairs::load(pairs).with_context(|| format!("cannot read {}", pairs.display()))?;
    let emb = s.images(&p.images);
    // Images that failed are left out, with their captions.
    let mut new_index = vec![None; p.images.len()];
    let mut images = Vec::new();
    for (i, e) in emb.iter().enumerate() {
        if let Some(e) = e {
            new_index[i] = Some(images.len());
            images.push(e.clone());
        }
    }
    let (captions, caption_image): (Vec<String>, Vec<usize>) = p
        .captions
        .iter()
        .zip(&p.caption_image)
        .filter_map(|(c, &i)| Some((c.clone(), new_index[i]?)))
        .unzip();
    let text = s.texts(&captions)?;
    let r = RetrievalReport::new(&images, &text, &caption_image, ks);
    let recall = |v: &[(usize, f64)]| {
        v.iter()
            .map(|(k, r)| (format!("R@{k}"), json!(r)))
            .collect::<serde_json::Map<_, _>>()
    };
    Ok(json!({
        "task": "retrieval",
        "data": pairs.display().to_string(),
        "metrics": {
            "images": r.images,
            "texts": r.texts,
            "image_to_text": recall(&r.image_to_text),
            "text_to_image": recall(&r.text_to_image),
        },
    }))
}

fn probe(s: &mut Session, args: &Eval, glob: Option<&str>) -> Result<Value> {
    let Task::LinearProbe {
        train,
        test,
        val,
        val_fraction,
        k_shot: k,
        seed,
    } = &args.task
    else {
        unreachable!("called for the linear probe")
    };
    let train_d = load_labelled(train, glob)?;
    let test_d = load_labelled(test, glob)?;
    let val_d = val.as_deref().map(|v| load_labelled(v, glob)).transpose()?;
    let all_labels = train_d
        .labels
        .iter()
        .chain(&test_d.labels)
        .chain(val_d.iter().flat_map(|v| &v.labels));
    let classes = Classes::new(all_labels, args.classes.as_deref())?;
    let embed = |s: &mut Session, d: &LabelledImages| -> Result<Embedded> {
        let y = classes.indices(&d.labels)?;
        let emb = s.images(&d.images);
        let items: Vec<(PathBuf, usize)> = d.images.iter().cloned().zip(y).collect();
        Ok(present(&emb, &items))
    };
    let (train_x, train_items) = embed(s, &train_d)?;
    let (test_x, test_items) = embed(s, &test_d)?;
    let labels_of = |items: &[(PathBuf, usize)]| items.iter().map(|(_, y)| *y).collect::<Vec<_>>();
    let train_y = labels_of(&train_items);
    let pick = |idx: &[usize]| -> Embedded {
        idx.iter()
            .map(|&i| (train_x[i].clone(), train_items[i].clone()))
            .unzip()
    };
    let ((fit_x, fit_items), (val_x, val_items), split) = match (&val_d, k) {
        (Some(v), _) => {
            let (vx, vi) = embed(s, v)?;
            (
                (train_x.clone(), train_items.clone()),
                (vx, vi),
                "given".to_string(),
            )
        }
        (None, Some(k)) => {
            let (t, v) = k_shot(&train_y, *k, *seed);
            (pick(&t), pick(&v), format!("{k}-shot, seed {seed}"))
        }
        (None, None) => {
            let (t, v) = stratified_split(&train_y, *val_fraction, *seed);
            (
                pick(&t),
                pick(&v),
                format!("{val_fraction} of train, seed {seed}"),
            )
        }
    };
    if val_x.is_empty() {
        bail!("the validation split is empty: give --val or more training images per class");
    }
    let report = linear_probe(
        (&fit_x, &labels_of(&fit_items)),
        (&val_x, &labels_of(&val_items)),
        (&test_x, &labels_of(&test_items)),
        classes.names.len(),
    );
    if let Some(dir) = &args.out {
        write_confusion(
            dir,
            &report.test,
            &classes.names,
            "linear-probe confusion (test)",
        )?;
        let mut csv = String::from("path,label,split\n");
        for (name, items) in [
            ("train", &fit_items),
            ("val", &val_items),
            ("test", &test_items),
        ] {
            for (p, y) in items.iter() {
                csv.push_str(&format!("{},{},{name}\n", p.display(), classes.labels[*y]));
            }
        }
        std::fs::write(dir.join("split.csv"), csv)?;
    }
    Ok(json!({
        "task": "linear-probe",
        "data": {"train": train.display().to_string(), "test": test.display().to_string(),
                 "val": val.as_ref().map(|v| v.display().to_string())},
        "split": split,
        "sizes": {"train": fit_x.len(), "val": val_x.len(), "test": test_x.len()},
        "classes": classes.names,
        "validation": report.validation.iter().map(|(c, a)| json!({"C": c, "accuracy": a})).collect::<Vec<_>>(),
        "C": report.c,
        "metrics": report_json(&report.test, &classes.names),
    }))
}

fn print_summary(r: &Value) {
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("n/a".into(), |x| format!("{:.2}%", 100.0 * x))
    };
    let m = &r["metrics"];
    match r["task"].as_str() {
        Some("retrieval") => {
            println!("retrieval: {} images, {} captions", m["images"], m["texts"]);
            for dir in ["image_to_text", "text_to_image"] {
                let parts: Vec<String> = m[dir]
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| format!("{k} {}", pct(v))).collect())
                    .unwrap_or_default();
                println!("  {dir}: {}", parts.join("  "));
            }
        }
        Some(task) => {
            if task == "linear-probe" {
                println!(
                    "linear probe: train {} / val {} / test {} ({}), C = {}",
                    r["sizes"]["train"],
                    r["sizes"]["val"],
                    r["sizes"]["test"],
                    r["split"].as_str().unwrap_or(""),
                    r["C"]
                );
            } else {
                println!("zero-shot: {} images", m["samples"]);
            }
            println!("  top-1 accuracy     {}", pct(&m["top1"]));
            println!("  top-5 accuracy     {}", pct(&m["top5"]));
            println!("  balanced accuracy  {}", pct(&m["balanced_accuracy"]));
            for c in m["per_class_recall"].as_array().into_iter().flatten() {
                println!(
                    "    {:<30} {}",
                    c["class"].as_str().unwrap_or(""),
                    pct(&c["recall"])
                );
            }
        }
        None => {}
    }
    let cache = &r["cache"];
    if cache["dir"].is_string() {
        println!(
            "  embeddings: {} from cache, {} encoded",
            cache["hits"], cache["encoded"]
        );
    }
}
