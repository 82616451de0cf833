//! `biomedclip search`: the rows of a collection nearest to a text or an image.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use biomedclip_collection::{model_id, Location, Store, Target};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::json;

use crate::options::{common, common_args, image_options, rendering_args, Common, ImageOptions};
use crate::terminal::printable;

/// A query.
pub enum Query {
    /// A text.
    Text(String),
    /// An image file.
    Image(PathBuf),
}

/// `search` options.
pub struct Search {
    /// Shared options.
    pub common: Common,
    /// Image options (for image queries).
    pub images: ImageOptions,
    /// The collection.
    pub location: Location,
    /// The queries, in order.
    pub queries: Vec<Query>,
    /// Results per query.
    pub top_k: usize,
    /// A metadata filter.
    pub filter: Option<String>,
    /// JSON output.
    pub json: bool,
    /// Through the HNSW index.
    pub ann: bool,
    /// HNSW search breadth.
    pub ef: Option<usize>,
    /// Against the captions instead of the images.
    pub captions: bool,
}

/// The subcommand's arguments.
pub fn command() -> Command {
    rendering_args(common_args(
        Command::new("search")
            .about("Find the images of a collection nearest to a text or an image (research use only)")
            .arg(
                Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("The collection (made by `biomedclip index build`): its folder, or its name with --store"),
            )
            .arg(crate::index::store_arg())
            .arg(
                Arg::new("text")
                    .long("text")
                    .value_name("T")
                    .action(ArgAction::Append)
                    .help("A text query (repeatable)"),
            )
            .arg(
                Arg::new("image")
                    .long("image")
                    .value_name("PATH")
                    .action(ArgAction::Append)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("An image query (repeatable)"),
            )
            .arg(
                Arg::new("top-k")
                    .long("top-k")
                    .value_name("K")
                    .value_parser(clap::value_parser!(usize))
                    .default_value("10")
                    .help("Results per query"),
            )
            .arg(
                Arg::new("where")
                    .long("where")
                    .value_name("EXPR")
                    .help(
                        "Only rows whose metadata pass EXPR, e.g. \"modality = 'CT' and \
                         study_date >= '2020'\" (= != < <= > >= in like is null, and or not)",
                    ),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("One JSON object per query: {\"query\", \"results\": [{rank, id, path, score, metadata}]}"),
            )
            .arg(
                Arg::new("ann")
                    .long("ann")
                    .action(ArgAction::SetTrue)
                    .help("Approximate search through the HNSW index (`index ann`) instead of exact"),
            )
            .arg(
                Arg::new("ef")
                    .long("ef")
                    .value_name("N")
                    .requires("ann")
                    .value_parser(clap::value_parser!(usize))
                    .help("HNSW search breadth (higher: better recall, slower)"),
            )
            .arg(
                Arg::new("captions")
                    .long("captions")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("ann")
                    .help("Score against the collection's caption embeddings instead of its images"),
            ),
    ))
}

/// Reads and validates the arguments.
pub fn parse(m: &ArgMatches) -> Result<Search> {
    let mut indexed: Vec<(usize, Query)> = Vec::new();
    if let (Some(i), Some(v)) = (m.indices_of("text"), m.get_many::<String>("text")) {
        indexed.extend(i.zip(v).map(|(i, t)| (i, Query::Text(t.clone()))));
    }
    if let (Some(i), Some(v)) = (m.indices_of("image"), m.get_many::<PathBuf>("image")) {
        indexed.extend(i.zip(v).map(|(i, p)| (i, Query::Image(p.clone()))));
    }
    if indexed.is_empty() {
        bail!("nothing to search for: pass --text T and/or --image PATH");
    }
    indexed.sort_by_key(|(i, _)| *i);
    Ok(Search {
        common: common(m)?,
        images: image_options(m)?,
        location: Location::new(
            m.get_one::<String>("store").map(String::as_str),
            &m.get_one::<PathBuf>("dir")
                .expect("required")
                .to_string_lossy(),
        )?,
        queries: indexed.into_iter().map(|(_, q)| q).collect(),
        top_k: *m.get_one("top-k").expect("default"),
        filter: m.get_one::<String>("where").cloned(),
        json: m.get_flag("json"),
        ann: m.get_flag("ann"),
        ef: m.get_one("ef").copied(),
        captions: m.get_flag("captions"),
    })
}

/// Runs the queries.
pub fn run(args: Search) -> Result<ExitCode> {
    let store = Store::open(&args.location, 1)
        .with_context(|| format!("cannot open collection {}", args.location))?;
    let filter = args
        .filter
        .as_deref()
        .map(|expr| store.parse_filter(expr))
        .transpose()?;
    let (files, mut model) = args.common.load_model_and_files()?;
    args.images.apply(&mut model);
    let id = model_id(&args.common.model_name(), &files)?;
    store.check_model(&id)?;

    let mut vectors = Vec::with_capacity(args.queries.len());
    for q in &args.queries {
        vectors.push(match q {
            Query::Text(t) => model.encode_texts(&[t])?.remove(0),
            Query::Image(p) => model
                .encode_image_files(&[p])
                .remove(0)
                .with_context(|| format!("cannot embed the query image {}", p.display()))?,
        });
    }
    let target = if args.captions {
        Target::Captions
    } else {
        Target::Images
    };
    let hits = store.search(
        &vectors,
        args.top_k,
        target,
        filter.as_ref(),
        args.ann.then_some(args.ef),
    )?;
    for (q, hits) in args.queries.iter().zip(&hits) {
        let query = match q {
            Query::Text(t) => json!({ "text": t }),
            Query::Image(p) => json!({ "image": p.to_string_lossy() }),
        };
        if args.json {
            let results: Vec<_> = hits
                .iter()
                .enumerate()
                .map(|(rank, h)| {
                    json!({
                        "rank": rank + 1,
                        "id": h.id,
                        "path": h.path,
                        "score": h.score,
                        "metadata": h.metadata,
                    })
                })
                .collect();
            println!("{}", json!({ "query": query, "results": results }));
        } else {
            match q {
                Query::Text(t) => println!("text: {}", printable(t)),
                Query::Image(p) => println!("image: {}", printable(&p.display().to_string())),
            }
            for (rank, h) in hits.iter().enumerate() {
                println!(
                    "{:>4}  {:.4}  {}",
                    rank + 1,
                    h.score,
                    printable(h.path.as_deref().unwrap_or(""))
                );
            }
        }
    }
    if !args.json {
        eprintln!("BiomedCLIP is a research model: these results are not for clinical use.");
    }
    Ok(ExitCode::SUCCESS)
}
