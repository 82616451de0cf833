//! `biomedclip serve`: the HTTP service (the `biomedclip-server` crate) on one model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use biomedclip_collection::{model_id, Location, Store};
use biomedclip_server::routes::search::ServedCollection;
use biomedclip_server::ServerConfig;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::options::{common, common_args, image_options, rendering_args, Common, ImageOptions};

/// `serve` options.
pub struct Serve {
    /// Shared options.
    pub common: Common,
    /// Rendering and pixel limit.
    pub image_options: ImageOptions,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Limits and options of the server.
    pub config: ServerConfig,
    /// `--collection NAME=DIR|URL`, in order.
    pub collections: Vec<(String, Location)>,
}

fn number(name: &'static str, value: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("N")
        .default_value(value)
        .value_parser(clap::value_parser!(u64).range(1..))
        .help(help)
}

/// A positive number of seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// The subcommand's arguments.
pub fn command() -> Command {
    let defaults = ServerConfig::default();
    // clap keeps default values as 'static strings.
    let text = |v: usize| -> &'static str { Box::leak(v.to_string().into_boxed_str()) };
    rendering_args(common_args(
        Command::new("serve")
            .about(
                "Serve embeddings, OpenAI-compatible embeddings, zero-shot classification and a \
                 web page over HTTP",
            )
            .arg(
                Arg::new("host")
                    .long("host")
                    .value_name("ADDR")
                    .default_value("127.0.0.1")
                    .help("Address to listen on (0.0.0.0 for every interface)"),
            )
            .arg(
                Arg::new("port")
                    .long("port")
                    .value_name("PORT")
                    .default_value("8080")
                    .value_parser(clap::value_parser!(u16))
                    .help("Port to listen on (0: any free port, printed at start)"),
            )
            .arg(number(
                "max-batch-images",
                text(defaults.max_batch_images),
                "Images per engine call; requests waiting together are coalesced up to it",
            ))
            .arg(number(
                "max-batch-tokens",
                text(defaults.max_batch_tokens),
                "Text tokens per engine call",
            ))
            .arg(number(
                "max-concurrent-requests",
                text(defaults.max_concurrent_requests),
                "Requests in flight at once; more are answered 429 with Retry-After",
            ))
            .arg(number(
                "max-client-batch",
                text(defaults.max_client_batch),
                "Inputs (images, texts or label prompts) one request may carry; more: 413",
            ))
            .arg(number(
                "payload-limit",
                text(defaults.payload_limit),
                "Bytes one request body may have; more: 413",
            ))
            .arg(
                Arg::new("request-timeout")
                    .long("request-timeout")
                    .value_name("SECONDS")
                    .default_value("60")
                    .value_parser(seconds)
                    .help("Seconds a request may take from arrival to answer; longer: 503"),
            )
            .arg(number(
                "label-cache",
                text(defaults.label_cache),
                "Label prompts whose text embeddings /classify keeps",
            ))
            .arg(
                Arg::new("collection")
                    .long("collection")
                    .value_name("NAME=DIR|URL")
                    .action(ArgAction::Append)
                    .help(
                        "Serve a collection made by `biomedclip index build` for POST /search \
                         and the page's search tab (repeatable): its folder, or the \
                         postgres://user@host:port/database holding collection NAME",
                    ),
            )
            .arg(
                Arg::new("api-key")
                    .long("api-key")
                    .value_name("KEY")
                    .env("BIOMEDCLIP_API_KEY")
                    .hide_env_values(true)
                    .help(
                        "Require `Authorization: Bearer KEY` on every route but /, /docs, \
                         /openapi.json, /health and /metrics",
                    ),
            ),
    ))
}

/// Reads the arguments.
pub fn parse(m: &ArgMatches) -> Result<Serve> {
    let common = common(m)?;
    let image_options = image_options(m)?;
    let host: &String = m.get_one("host").expect("has a default");
    let port: u16 = *m.get_one("port").expect("has a default");
    let ip: std::net::IpAddr = host
        .parse()
        .with_context(|| format!("--host {host:?} is not an IP address"))?;
    let n = |name: &str| *m.get_one::<u64>(name).expect("has a default") as usize;
    let config = ServerConfig {
        model_name: common.model.to_string(),
        max_batch_images: n("max-batch-images"),
        max_batch_tokens: n("max-batch-tokens"),
        max_concurrent_requests: n("max-concurrent-requests"),
        max_client_batch: n("max-client-batch"),
        payload_limit: n("payload-limit"),
        max_image_pixels: image_options.limits.max_pixels,
        api_key: m
            .get_one::<String>("api-key")
            .cloned()
            .filter(|k| !k.is_empty()),
        request_timeout: *m
            .get_one::<Duration>("request-timeout")
            .expect("has a default"),
        label_cache: n("label-cache"),
        collections: Vec::new(),
    };
    let mut collections: Vec<(String, Location)> = Vec::new();
    for spec in m.get_many::<String>("collection").into_iter().flatten() {
        let Some((name, dir)) = spec.split_once('=') else {
            bail!("--collection {spec:?}: expected NAME=DIR");
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("--collection {spec:?}: the name must be letters, digits, '-', '_' or '.'");
        }
        if collections.iter().any(|(n, _)| n == name) {
            bail!("--collection {name:?} is given twice");
        }
        let location = if dir.starts_with("postgres://") || dir.starts_with("postgresql://") {
            Location::new(Some(dir), name).with_context(|| format!("--collection {name}"))?
        } else {
            Location::Folder(PathBuf::from(dir))
        };
        collections.push((name.to_string(), location));
    }
    Ok(Serve {
        common,
        image_options,
        addr: SocketAddr::new(ip, port),
        config,
        collections,
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("shutting down: finishing the requests in flight");
}

/// Opens the collections and checks each was embedded by the model served.
fn open_collections(
    common: &Common,
    specs: &[(String, Location)],
    connections: u32,
) -> Result<Vec<Arc<ServedCollection>>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let files = common
        .model
        .resolve()
        .with_context(|| format!("cannot load model {}", common.model))?;
    let id = model_id(&common.model_name(), &files)?;
    let mut out = Vec::new();
    for (name, location) in specs {
        let store = Store::open(location, connections)
            .with_context(|| format!("--collection {name}: cannot open {location}"))?;
        store
            .check_model(&id)
            .with_context(|| format!("--collection {name}"))?;
        // This opens a folder's HNSW index now rather than at the first request, so that
        // start-up says whether approximate search is served.
        if let Some(problem) = store.ann_problem() {
            eprintln!("warning: --collection {name}: {problem}; serving exact search only");
        }
        let summary = store
            .summary()
            .with_context(|| format!("--collection {name}"))?;
        eprintln!(
            "collection {name}: {} rows from {location}{}",
            summary.rows,
            if summary.ann {
                " (with its HNSW index)"
            } else {
                ""
            }
        );
        out.push(Arc::new(ServedCollection {
            name: name.clone(),
            store,
        }));
    }
    Ok(out)
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(mut args: Serve) -> Result<ExitCode> {
    args.common.configure_threads()?;
    // Database connections: enough for the searches one server runs at once, well under
    // PostgreSQL's default limit of 100 so that replicas can share one database.
    let connections = args.config.max_concurrent_requests.clamp(1, 16) as u32;
    args.config.collections = open_collections(&args.common, &args.collections, connections)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("biomedclip-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let local = listener.local_addr()?;
        eprintln!(
            "listening on http://{local} (loading the model; /health answers 200 once it is ready)"
        );
        let Serve {
            common,
            image_options,
            config,
            ..
        } = args;
        let load = move || {
            let started = std::time::Instant::now();
            let (_, mut model) = common.load().map_err(|e| format!("{e:#}"))?;
            image_options.apply(&mut model);
            eprintln!(
                "model {} loaded in {:.2} s ({}, {}); BiomedCLIP is for research, not clinical use",
                common.model,
                started.elapsed().as_secs_f64(),
                model.precision(),
                model.device()
            );
            Ok(model)
        };
        biomedclip_server::serve(listener, config, load, shutdown_signal()).await?;
        eprintln!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
