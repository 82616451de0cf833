//! Where the int8 image tower's error comes from: the worst and mean cosine to `f32` over a
//! set of images (the fixtures plus synthetic worst cases) with every linear layer in int8,
//! with only one kind of layer or one block in int8 (the rest `f32`), and with chosen layers
//! moved to bf16 (`INT8_LAYERS_BF16="*.proj;0.*,*.fc2"`: one plan per `;`; the first rows are
//! the shipped plan and every layer in int8; `INT8_LAYERS_NO_ABLATION=1` skips the per-kind
//! and per-block rows). Reported in docs/engine.md ("int8 error, layer by layer").
//!
//! ```text
//! int8_layers MODEL_DIR [IMAGE|DIR]...   # default: the fixtures' images
//! ```

use std::path::{Path, PathBuf};

use biomedclip::image::render::Rendering;
use biomedclip::{BiomedClip, Device, ImageInput, ModelFiles, ModelSource, Precision};

/// Synthetic images that stress per-token activation ranges: flat, blocky, line art, text,
/// noise. `(name, width, height, RGB)`.
fn synthetic() -> Vec<(String, usize, usize, Vec<u8>)> {
    let (w, h) = (224usize, 224usize);
    let mut seed = 7u32;
    let mut rand = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 24) as u8
    };
    let mut out = Vec::new();
    let fill = |f: &dyn Fn(usize, usize) -> [u8; 3]| -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| f(x, y)))
            .collect()
    };
    out.push(("flat-grey".into(), w, h, fill(&|_, _| [128, 128, 128])));
    out.push(("black".into(), w, h, fill(&|_, _| [0, 0, 0])));
    out.push(("white".into(), w, h, fill(&|_, _| [255, 255, 255])));
    out.push((
        "flat-photo".into(),
        w,
        h,
        fill(&|x, y| [150 + (x / 56) as u8, 120 + (y / 75) as u8, 100]),
    ));
    let palette: Vec<[u8; 3]> = (0..64).map(|_| [rand(), rand(), rand()]).collect();
    out.push((
        "tiny-palette-upscaled".into(),
        w,
        h,
        fill(&|x, y| palette[(y / 28) * 8 + x / 28]),
    ));
    out.push((
        "line-art".into(),
        w,
        h,
        fill(&|x, y| {
            if x % 32 == 0 || y % 40 == 0 || (x + y) % 57 == 0 {
                [0, 0, 0]
            } else {
                [255, 255, 255]
            }
        }),
    ));
    out.push((
        "text".into(),
        w,
        h,
        fill(&|x, y| {
            let (line, col) = (y / 16, x / 9);
            let ink = y % 16 < 11 && x % 9 < 6 && (line * 31 + col * 17) % 5 != 0 && {
                let (gx, gy) = (x % 9, y % 16);
                gx == 0 || gy == 0 || gy == 5 || (gx + gy + col) % 4 == 0
            };
            if ink {
                [10, 10, 10]
            } else {
                [250, 250, 245]
            }
        }),
    ));
    out.push((
        "checkerboard".into(),
        w,
        h,
        fill(&|x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                [0, 0, 0]
            } else {
                [255, 255, 255]
            }
        }),
    ));
    let noise: Vec<u8> = (0..w * h * 3).map(|_| rand()).collect();
    out.push(("noise".into(), w, h, noise));
    out
}

fn image_files(args: &[String]) -> Vec<PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let roots: Vec<PathBuf> = if args.is_empty() {
        vec![
            fixtures.join("images"),
            fixtures.join("dataset/images"),
            fixtures.join("dicom"),
        ]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let mut files = Vec::new();
    for root in roots {
        for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let path = entry.expect("readable folder").into_path();
            if path.is_file()
                && biomedclip::image::input::looks_like_image(&path)
                && !path.ends_with("not_an_image.png")
            {
                files.push(path);
            }
        }
    }
    files
}

/// The model card's labels, for the top-1 check.
const LABELS: [&str; 9] = [
    "adenocarcinoma histopathology",
    "brain MRI",
    "covid line chart",
    "squamous cell carcinoma histopathology",
    "immunohistochemistry histopathology",
    "bone X-ray",
    "chest X-ray",
    "pie chart",
    "hematoxylin and eosin histopathology",
];

fn top1(model: &BiomedClip, image: &[f32], texts: &[Vec<f32>]) -> usize {
    let p = model.probabilities(image, texts);
    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: int8_layers MODEL_DIR [IMAGE|DIR]...")?,
    );
    let files = ModelSource::Local(dir).resolve()?;
    let paths = image_files(&args[1..]);
    let synthetic = synthetic();
    let mut names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.extend(synthetic.iter().map(|s| s.0.clone()));
    let mut inputs: Vec<ImageInput<'_>> = paths.iter().map(ImageInput::path).collect();
    inputs.extend(
        synthetic
            .iter()
            .map(|(_, w, h, d)| ImageInput::rgb8(*w, *h, d)),
    );

    // Files the decoders refuse (a 12-bit JPEG DICOM) are left out, and said so.
    let mut f32_model = BiomedClip::from_files_at(&files, &Device::Cpu, Precision::F32)?;
    f32_model.set_rendering(Rendering::reference());
    let first = f32_model.encode_images(&inputs);
    let mut exact = Vec::new();
    let mut kept = Vec::new();
    for (i, r) in first.into_iter().enumerate() {
        match r {
            Ok(e) => {
                exact.push(e);
                kept.push(i);
            }
            Err(e) => eprintln!("left out: {e}"),
        }
    }
    let inputs: Vec<ImageInput<'_>> = kept.iter().map(|&i| inputs[i]).collect();
    let names: Vec<String> = kept.iter().map(|&i| names[i].clone()).collect();
    let embed = |files: &ModelFiles, precision: Precision| -> Vec<Vec<f32>> {
        let mut model = BiomedClip::from_files_at(files, &Device::Cpu, precision).expect("load");
        model.set_rendering(Rendering::reference());
        model
            .encode_images(&inputs)
            .into_iter()
            .zip(&names)
            .map(|(r, n)| r.unwrap_or_else(|e| panic!("{n}: {e}")))
            .collect()
    };
    let prompts: Vec<String> = LABELS
        .iter()
        .map(|l| format!("{}{l}", biomedclip::DEFAULT_TEMPLATE))
        .collect();
    let texts = f32_model.encode_texts(&prompts)?;
    let exact_top1: Vec<usize> = exact.iter().map(|e| top1(&f32_model, e, &texts)).collect();
    println!("{} images ({} synthetic)", names.len(), synthetic.len());
    println!("| int8 layers (the rest f32) | bf16 instead | worst cosine | mean | worst image | top-1 changed |");
    println!("|---|---|---|---|---|---|");
    let depth = f32_model.dims().vision.depth;
    // ("all", "default"): the shipped plan; an empty bf16 list: every layer in int8.
    let mut configs: Vec<(String, String)> = vec![
        ("all".into(), "default".into()),
        ("all".into(), String::new()),
    ];
    if std::env::var_os("INT8_LAYERS_NO_ABLATION").is_none() {
        for kind in ["qkv", "proj", "fc1", "fc2"] {
            configs.push((format!("*.{kind}"), String::new()));
        }
        for b in 0..depth {
            configs.push((format!("{b}.*"), String::new()));
        }
    }
    if let Ok(extra) = std::env::var("INT8_LAYERS_BF16") {
        for list in extra.split(';') {
            configs.push(("all".into(), list.to_string()));
        }
    }
    for (only, bf16) in configs {
        if only == "all" {
            std::env::remove_var("BIOMEDCLIP_INT8_ONLY");
        } else {
            std::env::set_var("BIOMEDCLIP_INT8_ONLY", &only);
        }
        if bf16 == "default" {
            std::env::remove_var("BIOMEDCLIP_REDUCED_AS_BF16");
        } else {
            std::env::set_var("BIOMEDCLIP_REDUCED_AS_BF16", &bf16);
        }
        let got = embed(&files, Precision::Int8);
        let cos: Vec<f64> = exact.iter().zip(&got).map(|(a, b)| cosine(a, b)).collect();
        let (worst_i, worst) = cos
            .iter()
            .copied()
            .enumerate()
            .fold((0, 1.0), |acc, (i, c)| if c < acc.1 { (i, c) } else { acc });
        let mean = cos.iter().sum::<f64>() / cos.len() as f64;
        let short = Path::new(&names[worst_i])
            .file_name()
            .map_or(names[worst_i].clone(), |n| n.to_string_lossy().into_owned());
        let changed = got
            .iter()
            .zip(&exact_top1)
            .filter(|(g, &t)| top1(&f32_model, g, &texts) != t)
            .count();
        let bf16 = if bf16.is_empty() { "-" } else { &bf16 };
        println!("| {only} | {bf16} | {worst:.6} | {mean:.6} | {short} | {changed} |");
    }
    Ok(())
}
