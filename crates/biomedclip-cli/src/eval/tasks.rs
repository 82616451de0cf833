//! The three evaluations, each giving its results as JSON.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use biomedclip::eval::probe::{k_shot, stratified_split};
use biomedclip::eval::{
    class_embeddings, heatmap, linear_probe, CaptionPairs, Classes, ClassificationReport,
    LabelledImages, RetrievalReport,
};
use serde_json::{json, Value};

use super::{Eval, Session, Task};

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

fn load_labelled(s: &mut Session, path: &Path, glob: Option<&str>) -> Result<LabelledImages> {
    let d = LabelledImages::load(path, glob)
        .with_context(|| format!("cannot read data {}", path.display()))?;
    for (entry, reason) in &d.unreadable {
        s.unreadable(entry, reason);
    }
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

pub(super) fn zero_shot(
    s: &mut Session,
    data: &Path,
    templates: &[String],
    args: &Eval,
    glob: Option<&str>,
) -> Result<Value> {
    let d = load_labelled(s, data, glob)?;
    let classes = Classes::new(&d.labels, args.classes.as_deref())?;
    if classes.names.len() < 2 {
        eprintln!(
            "warning: {} has a single class ({}); zero-shot accuracy over one class is 100% \
             whatever the model does",
            data.display(),
            classes.names.join(", ")
        );
    }
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

pub(super) fn retrieval(s: &mut Session, pairs: &Path, ks: &[usize]) -> Result<Value> {
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

pub(super) fn probe(s: &mut Session, args: &Eval, glob: Option<&str>) -> Result<Value> {
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
    let train_d = load_labelled(s, train, glob)?;
    let test_d = load_labelled(s, test, glob)?;
    let val_d = val
        .as_deref()
        .map(|v| load_labelled(s, v, glob))
        .transpose()?;
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
    let trained: std::collections::BTreeSet<usize> = train_items.iter().map(|(_, y)| *y).collect();
    let unseen: std::collections::BTreeSet<&str> = test_items
        .iter()
        .filter(|(_, y)| !trained.contains(y))
        .map(|(_, y)| classes.labels[*y].as_str())
        .collect();
    if !unseen.is_empty() {
        eprintln!(
            "warning: test class(es) {} have no training images; the probe cannot predict them, \
             so their images count as errors",
            unseen.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
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
