//! `biomedclip index build | update | ann`: make a searchable collection of an image archive
//! (clip-retrieval's npy + parquet layout), bring it up to date, index it for approximate
//! search.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use biomedclip_collection::ann::{self, AnnParams};
use biomedclip_collection::build::{build, BuildOptions, Event};
use biomedclip_collection::inputs::InputSpec;
use biomedclip_collection::layout::Shard;
use biomedclip_collection::postgres::{self, Database, PgBuildOptions};
use biomedclip_collection::{model_id, Collection, Manifest, DEFAULT_PART_SIZE};
use clap::{Arg, ArgAction, ArgMatches, Command};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::options::{
    common, common_args, image_args, image_options, rendering_args, Common, ImageOptions,
};
use crate::terminal::printable;

/// The subcommand's arguments.
pub fn command() -> Command {
    Command::new("index")
        .about("Make and maintain searchable collections (clip-retrieval's npy + parquet layout)")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(build_args(image_args(common_args(
            Command::new("build")
                .about("Embed images (and captions) into a collection; resumes where a stopped run left off")
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("DIR")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("The collection's folder (created if missing), or its name with --store"),
                )
                .arg(store_arg())
                .arg(
                    Arg::new("inputs")
                        .value_name("INPUT")
                        .num_args(1..)
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf))
                        .help(
                            "Image files, folders (searched recursively), or CSV files with a \
                             `path` column (relative to the CSV; a `caption` column gives \
                             captions, other columns are kept as metadata)",
                        ),
                )
                .arg(
                    Arg::new("captions")
                        .long("captions")
                        .value_name("CSV")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("A CSV of `path,caption` whose captions are embedded too (text_emb/)"),
                )
                .arg(
                    Arg::new("shard")
                        .long("shard")
                        .value_name("K/N")
                        .help(
                            "Take only the K-th of N stable shares of the inputs and write only \
                             that shard's parts, so N workers can fill one collection on shared \
                             storage",
                        ),
                )
                .arg(
                    Arg::new("part-size")
                        .long("part-size")
                        .value_name("N")
                        .value_parser(clap::value_parser!(usize))
                        .default_value(DEFAULT_PART_SIZE.to_string().leak() as &str)
                        .help("Inputs per part (a stopped run redoes at most one part)"),
                )
                .arg(
                    Arg::new("dtype")
                        .long("dtype")
                        .value_name("T")
                        .value_parser(["f32", "f16"])
                        .default_value("f32")
                        .help("Storage type of the embeddings: f32 (<f4) or f16 (<f2, half the size)"),
                ),
        ))))
        .subcommand(build_args(rendering_args(common_args(
            Command::new("update")
                .about(
                    "Bring a collection up to date with its inputs: embed new and changed files \
                     (by content hash), drop deleted ones",
                )
                .arg(dir_arg())
                .arg(store_arg()),
        ))))
        .subcommand(ann_args(
            Command::new("ann")
                .about("Build the HNSW index for approximate search (`search --ann`)")
                .arg(dir_arg())
                .arg(store_arg()),
        ))
}

/// `--store URL`: keep the collection in PostgreSQL + pgvector instead of a folder.
pub fn store_arg() -> Arg {
    Arg::new("store")
        .long("store")
        .value_name("URL")
        .env("BIOMEDCLIP_STORE")
        .help(
            "Keep the collection in PostgreSQL + pgvector (postgres://user@host:port/database) \
             instead of a folder; the collection argument is then its name (a table)",
        )
}

fn dir_arg() -> Arg {
    Arg::new("dir")
        .value_name("DIR")
        .required(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help("The collection's folder, or its name with --store")
}

fn build_args(cmd: Command) -> Command {
    ann_args(
        cmd.arg(
            Arg::new("ann").long("ann").action(ArgAction::SetTrue).help(
                "Also build the HNSW index for approximate search once the embeddings are done",
            ),
        ),
    )
}

fn ann_args(cmd: Command) -> Command {
    let d = AnnParams::default();
    cmd.arg(
        Arg::new("connectivity")
            .long("connectivity")
            .value_name("M")
            .value_parser(clap::value_parser!(usize))
            .default_value(d.connectivity.to_string().leak() as &str)
            .help("HNSW neighbours per node"),
    )
    .arg(
        Arg::new("expansion-add")
            .long("expansion-add")
            .value_name("N")
            .value_parser(clap::value_parser!(usize))
            .default_value(d.expansion_add.to_string().leak() as &str)
            .help("HNSW candidates while inserting (efConstruction)"),
    )
    .arg(
        Arg::new("expansion-search")
            .long("expansion-search")
            .value_name("N")
            .value_parser(clap::value_parser!(usize))
            .default_value(d.expansion_search.to_string().leak() as &str)
            .help("HNSW candidates while searching (ef), unless `search --ef` says otherwise"),
    )
    .arg(
        Arg::new("quantization")
            .long("quantization")
            .value_name("Q")
            .value_parser(["f32", "f16", "i8"])
            .default_value(d.quantization.as_str())
            .help(
                "How the HNSW graph stores vectors (f16 and i8: the best candidates are \
                 re-scored exactly against the collection's own embeddings)",
            ),
    )
}

/// `build` and `update` arguments.
pub struct BuildArgs {
    /// Shared options.
    common: Common,
    /// `--store`: the database, instead of a folder.
    store: Option<Database>,
    /// Image options.
    images: ImageOptions,
    /// What to build.
    options: BuildOptions,
    /// Then the HNSW index, with these parameters.
    ann: Option<AnnParams>,
}

/// Parsed `index` arguments.
pub enum Index {
    /// `build` or `update`.
    Build(Box<BuildArgs>),
    /// `ann`.
    Ann {
        /// The collection.
        dir: PathBuf,
        /// `--store`: the database, instead of a folder.
        store: Option<Box<Database>>,
        /// Parameters.
        params: AnnParams,
    },
}

fn ann_params(m: &ArgMatches) -> Result<AnnParams> {
    Ok(AnnParams {
        connectivity: *m.get_one("connectivity").expect("default"),
        expansion_add: *m.get_one("expansion-add").expect("default"),
        expansion_search: *m.get_one("expansion-search").expect("default"),
        quantization: m
            .get_one::<String>("quantization")
            .expect("default")
            .parse()?,
    })
}

/// Reads the arguments.
pub fn parse(m: &ArgMatches) -> Result<Index> {
    match m.subcommand() {
        Some(("build", m)) => {
            let shard: Shard = m
                .get_one::<String>("shard")
                .map_or(Ok(Shard::ALL), |s| s.parse())?;
            if shard != Shard::ALL && m.get_flag("ann") {
                bail!(
                    "--ann with --shard: each worker sees only its share; build the HNSW index \
                     once all shards are done, with `biomedclip index ann DIR`"
                );
            }
            let images = image_options(m)?;
            Ok(Index::Build(Box::new(BuildArgs {
                common: common(m)?,
                store: store(m)?,
                options: BuildOptions {
                    root: m.get_one::<PathBuf>("out").expect("required").clone(),
                    spec: InputSpec {
                        inputs: m
                            .get_many::<PathBuf>("inputs")
                            .expect("required")
                            .cloned()
                            .collect(),
                        glob: images.glob.clone(),
                        captions: m.get_one::<PathBuf>("captions").cloned(),
                    },
                    shard,
                    part_size: *m.get_one("part-size").expect("default"),
                    dtype: m.get_one::<String>("dtype").expect("default").parse()?,
                    update: false,
                },
                images,
                ann: m.get_flag("ann").then(|| ann_params(m)).transpose()?,
            })))
        }
        Some(("update", m)) => {
            let dir = m.get_one::<PathBuf>("dir").expect("required").clone();
            let store = store(m)?;
            let manifest = match &store {
                None => Manifest::read(&dir.join(biomedclip_collection::layout::MANIFEST))?,
                Some(db) => postgres::manifest(db, &dir.to_string_lossy())?,
            };
            // Rows written through FolderWriter or PgWriter: nothing recorded to list again,
            // and their files may live on other machines, so "not listed" is not "deleted".
            if manifest.inputs.is_empty() {
                bail!(
                    "{}: the collection was written from embeddings made elsewhere and records \
                     no inputs to list again; update it the way it was written",
                    dir.display()
                );
            }
            let mut common = common(m)?;
            // The collection's own precision unless asked otherwise (a different one is
            // refused by the build, naming both).
            if m.value_source("precision") == Some(clap::parser::ValueSource::DefaultValue) {
                common.precision = manifest.precision.parse()?;
            }
            // The collection's rendering and limits unless given: embeddings of another
            // rendering are refused by the build, naming both.
            let mut images = ImageOptions {
                glob: manifest.glob.clone(),
                ..image_options(m)?
            };
            let given = |id: &str| {
                m.try_get_raw(id).is_ok_and(|v| v.is_some())
                    && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            };
            if let Some(recorded) = &manifest.rendering {
                if !given("window") && !given("reference-16bit") {
                    images.rendering = recorded.rendering()?;
                }
            }
            if let Some(recorded) = manifest.limits {
                if !given("max-image-pixels") {
                    images.limits.max_pixels = recorded.max_image_pixels;
                }
                if !given("max-input-bytes") {
                    images.limits.max_bytes = recorded.max_input_bytes;
                }
            }
            Ok(Index::Build(Box::new(BuildArgs {
                common,
                store,
                images,
                options: BuildOptions {
                    root: dir,
                    spec: InputSpec {
                        inputs: manifest.inputs.iter().map(PathBuf::from).collect(),
                        glob: manifest.glob.clone(),
                        captions: manifest.captions_csv.as_ref().map(PathBuf::from),
                    },
                    shard: Shard::ALL,
                    part_size: manifest.part_size,
                    dtype: manifest.dtype,
                    update: true,
                },
                ann: m.get_flag("ann").then(|| ann_params(m)).transpose()?,
            })))
        }
        Some(("ann", m)) => Ok(Index::Ann {
            dir: m.get_one::<PathBuf>("dir").expect("required").clone(),
            store: store(m)?.map(Box::new),
            params: ann_params(m)?,
        }),
        _ => unreachable!("clap requires a subcommand"),
    }
}

/// The database of `--store`, checked.
fn store(m: &ArgMatches) -> Result<Option<Database>> {
    Ok(m.get_one::<String>("store")
        .map(|url| Database::parse(url))
        .transpose()?)
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("valid template"),
    );
    bar
}

fn build_ann(dir: &std::path::Path, store: Option<&Database>, params: &AnnParams) -> Result<()> {
    if let Some(db) = store {
        let name = dir.to_string_lossy();
        let started = std::time::Instant::now();
        let made = postgres::create_hnsw(db, &name, params.connectivity, params.expansion_add)?;
        eprintln!(
            "{}: {}",
            db.target(&name),
            if made {
                format!(
                    "HNSW index (vector_cosine_ops, m {}, ef_construction {}) built in {:.1} s",
                    params.connectivity,
                    params.expansion_add,
                    started.elapsed().as_secs_f64()
                )
            } else {
                "the HNSW index exists already (inserts keep it current)".to_string()
            }
        );
        return Ok(());
    }
    let collection = Collection::open(dir)?;
    let progress = bar(collection.len(), "rows indexed");
    let info = ann::build(&collection, params, &|n| progress.inc(n as u64))?;
    progress.finish_and_clear();
    eprintln!(
        "HNSW index over {} rows (M {}, efConstruction {}, {:?}) in {}",
        info.parts.iter().map(|p| p.1).sum::<usize>(),
        params.connectivity,
        params.expansion_add,
        params.quantization,
        collection.layout().ann().0.display()
    );
    Ok(())
}

/// Runs it.
pub fn run(index: Index) -> Result<ExitCode> {
    let BuildArgs {
        common,
        store,
        images,
        options,
        ann,
    } = match index {
        Index::Ann { dir, store, params } => {
            build_ann(&dir, store.as_deref(), &params)?;
            return Ok(ExitCode::SUCCESS);
        }
        Index::Build(args) => *args,
    };
    let (files, mut model) = common.load_model_and_files()?;
    images.apply(&mut model);
    let id = model_id(&common.model_name(), &files)
        .with_context(|| format!("cannot hash the weights of {}", common.model))?;
    let mut progress: Option<ProgressBar> = None;
    let mut on = |event: Event<'_>| match event {
        Event::Planned {
            inputs,
            done,
            pending,
        } => {
            eprintln!(
                "{inputs} input(s){}: {done} already in the collection, {pending} to embed",
                if options.shard == Shard::ALL {
                    String::new()
                } else {
                    format!(" in shard {}", options.shard)
                }
            );
            progress = Some(bar(pending, "images"));
        }
        Event::Embedded(n) => {
            if let Some(p) = &progress {
                p.inc(n as u64);
            }
        }
        Event::Failed(f) => {
            let line = format!("error: {}", printable(&f.error));
            match &progress {
                Some(p) => p.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
        Event::Committed(_) => {}
    };
    let report = match &store {
        None => build(&model, &id, &options, &mut on)
            .with_context(|| format!("cannot build collection {}", options.root.display()))?,
        Some(db) => {
            let name = options.root.to_string_lossy().into_owned();
            let pg = PgBuildOptions {
                database: db.clone(),
                name: name.clone(),
                spec: options.spec.clone(),
                shard: options.shard,
                batch: options.part_size,
                update: options.update,
            };
            postgres::build(&model, &id, &pg, &mut on)
                .with_context(|| format!("cannot build collection {}", db.target(&name)))?
        }
    };
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let manifest = report
        .manifest
        .as_ref()
        .expect("a finished build has a manifest");
    // Where the collection is, and where its failures are listed.
    let (summary, failures_in) = match &store {
        None => (
            format!(
                "{}: {} rows in {} part(s); this run embedded {}, dropped {}, relabelled {}, \
                 wrote {} part(s)",
                options.root.display(),
                manifest.rows,
                manifest.parts.len(),
                report.embedded,
                report.dropped,
                report.relabelled,
                report.parts.len()
            ),
            format!(
                "under \"failed\" in {}",
                options
                    .root
                    .join(biomedclip_collection::layout::MANIFEST)
                    .display()
            ),
        ),
        Some(db) => (
            format!(
                "{}: {} rows; this run embedded {}, dropped {}, relabelled {}",
                db.target(&options.root.to_string_lossy()),
                manifest.rows,
                report.embedded,
                report.dropped,
                report.relabelled
            ),
            format!("in table {}__failed", options.root.display()),
        ),
    };
    eprintln!("{summary}");
    if let Some(params) = ann {
        build_ann(&options.root, store.as_ref(), &params)?;
    }
    if !manifest.failed.is_empty() {
        eprintln!(
            "{} input(s) could not be embedded; they are listed with the reason {failures_in}",
            manifest.failed.len(),
        );
        return Ok(ExitCode::FAILURE);
    }
    if options.shard == Shard::ALL && report.inputs == 0 {
        bail!("no images found in the inputs");
    }
    Ok(ExitCode::SUCCESS)
}
