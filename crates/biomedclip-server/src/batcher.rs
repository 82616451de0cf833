//! The model on its own thread, fed by a queue: requests wait in the queue while the engine
//! is busy and are then run together as one batch, so that concurrent single-image requests
//! cost what one batched call costs. An idle engine takes a request at once (no fixed delay
//! to wait for company). Images and texts are batched separately, each in arrival order.
//!
//! The queue itself is not bounded here: the request slots (a semaphore in the routes, as
//! text-embeddings-inference does) bound what can be waiting, and a full server answers 429
//! before anything is queued.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// What the engine thread calls: the towers, on preprocessed inputs.
pub trait Encoder: Send + Sync + 'static {
    /// L2-normalised embeddings of preprocessed images (`3 * size * size` CHW floats each).
    fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String>;
    /// L2-normalised embeddings of token id sequences.
    fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String>;
}

impl Encoder for biomedclip::BiomedClip {
    fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
        biomedclip::BiomedClip::encode_pixels(self, images).map_err(|e| e.to_string())
    }

    fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        biomedclip::BiomedClip::encode_token_ids(self, ids).map_err(|e| e.to_string())
    }
}

/// One request's inputs for the engine.
#[derive(Debug, Clone)]
pub enum Work {
    /// Preprocessed images.
    Images(Vec<Vec<f32>>),
    /// Token id sequences.
    Texts(Vec<Vec<u32>>),
}

impl Work {
    fn is_images(&self) -> bool {
        matches!(self, Work::Images(_))
    }

    /// Images, or tokens: what the batch limits count.
    fn cost(&self) -> usize {
        match self {
            Work::Images(v) => v.len(),
            Work::Texts(v) => v.iter().map(Vec::len).sum(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Work::Images(v) => v.len(),
            Work::Texts(v) => v.len(),
        }
    }
}

/// Why the engine gave no embeddings for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The engine returned an error for this request's inputs.
    Failed(String),
    /// The engine panicked on this request's inputs.
    Panicked(String),
    /// The engine thread has stopped.
    Stopped,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Failed(m) => write!(f, "inference failed: {m}"),
            EngineError::Panicked(m) => write!(f, "inference panicked: {m}"),
            EngineError::Stopped => f.write_str("the engine has stopped"),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>;

struct Job {
    work: Work,
    queued: Instant,
    reply: Reply,
}

/// How large one engine call may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Images per engine call.
    pub max_images: usize,
    /// Tokens per engine call.
    pub max_tokens: usize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    metrics: Arc<Metrics>,
}

/// The handle requests submit work through; cloning it is cheap.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the engine thread.
    pub fn start(
        encoder: Arc<dyn Encoder>,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
    ) -> (Batcher, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            metrics,
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("biomedclip-engine".into())
            .spawn(move || run(&worker, encoder.as_ref(), limits))
            .expect("cannot start the engine thread");
        (Batcher { shared }, handle)
    }

    /// Queues `work` and waits for its embeddings, in input order. Dropping the returned
    /// future (a client that went away) withdraws the work if it has not started.
    pub async fn submit(&self, work: Work) -> Result<Vec<Vec<f32>>, EngineError> {
        if work.len() == 0 {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock().expect("queue lock");
            if queue.closed {
                return Err(EngineError::Stopped);
            }
            queue.jobs.push_back(Job {
                work,
                queued: Instant::now(),
                reply,
            });
            self.shared.metrics.queue_size.set(queue.jobs.len() as i64);
        }
        self.shared.wake.notify_one();
        answer.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Requests waiting for the engine.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().expect("queue lock").jobs.len()
    }

    /// Stops taking work; the engine thread finishes what is queued, then returns.
    pub fn close(&self) {
        self.shared.queue.lock().expect("queue lock").closed = true;
        self.shared.wake.notify_all();
    }
}

/// The engine thread: take a batch, run it, answer, until closed and drained.
fn run(shared: &Shared, encoder: &dyn Encoder, limits: BatchLimits) {
    while let Some(batch) = next_batch(shared, limits) {
        let metrics = &shared.metrics;
        let now = Instant::now();
        for job in &batch {
            metrics
                .queue_duration
                .observe((now - job.queued).as_secs_f64());
        }
        metrics
            .batch_size
            .observe(batch.iter().map(|j| j.work.len()).sum::<usize>() as f64);
        metrics.batch_requests.observe(batch.len() as f64);
        run_batch(encoder, batch, metrics);
    }
}

/// Waits for work, then takes the oldest request and every later one of the same kind that
/// fits the limits, skipping (and dropping) requests whose client has gone.
fn next_batch(shared: &Shared, limits: BatchLimits) -> Option<Vec<Job>> {
    let mut queue = shared.queue.lock().expect("queue lock");
    loop {
        let before = queue.jobs.len();
        queue.jobs.retain(|job| !job.reply.is_closed());
        let withdrawn = before - queue.jobs.len();
        if withdrawn > 0 {
            shared.metrics.withdrawn.inc_by(withdrawn as u64);
        }
        if !queue.jobs.is_empty() {
            break;
        }
        shared.metrics.queue_size.set(0);
        if queue.closed {
            return None;
        }
        queue = shared.wake.wait(queue).expect("queue lock");
    }
    let images = queue.jobs[0].work.is_images();
    let limit = if images {
        limits.max_images
    } else {
        limits.max_tokens
    };
    let mut batch = Vec::new();
    let mut cost = 0;
    let mut rest = VecDeque::with_capacity(queue.jobs.len());
    for job in queue.jobs.drain(..) {
        let fits = batch.is_empty() || cost + job.work.cost() <= limit;
        if job.work.is_images() == images && fits && rest.is_empty() {
            cost += job.work.cost();
            batch.push(job);
        } else {
            // Keep arrival order: once one request of this kind waits, later ones do too.
            rest.push_back(job);
        }
    }
    queue.jobs = rest;
    shared.metrics.queue_size.set(queue.jobs.len() as i64);
    Some(batch)
}

/// Runs one batch; if it fails or panics with several requests in it, runs each alone so
/// that only the request that caused it gets the error.
fn run_batch(encoder: &dyn Encoder, batch: Vec<Job>, metrics: &Metrics) {
    let started = Instant::now();
    let result = encode(encoder, batch.iter().map(|j| &j.work));
    metrics
        .inference_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(mut embeddings) => {
            count(&batch, metrics);
            for job in batch.into_iter().rev() {
                let tail = embeddings.split_off(embeddings.len() - job.work.len());
                // A client that went away meanwhile no longer listens; nothing to do.
                let _ = job.reply.send(Ok(tail));
            }
        }
        Err(e) if batch.len() == 1 => {
            let _ = batch.into_iter().next().expect("one").reply.send(Err(e));
        }
        Err(_) => {
            for job in batch {
                let result = encode(encoder, std::iter::once(&job.work));
                if result.is_ok() {
                    count(std::slice::from_ref(&job), metrics);
                }
                let _ = job.reply.send(result);
            }
        }
    }
}

fn count(batch: &[Job], metrics: &Metrics) {
    for job in batch {
        match &job.work {
            Work::Images(v) => metrics.images.inc_by(v.len() as u64),
            Work::Texts(v) => metrics.texts.inc_by(v.len() as u64),
        };
    }
}

/// One engine call on the concatenated inputs of same-kind requests, panics caught.
fn encode<'a>(
    encoder: &dyn Encoder,
    works: impl Iterator<Item = &'a Work>,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let works: Vec<&Work> = works.collect();
    let expected: usize = works.iter().map(|w| w.len()).sum();
    let call = || match works[0] {
        Work::Images(_) => {
            let all: Vec<Vec<f32>> = works
                .iter()
                .flat_map(|w| match w {
                    Work::Images(v) => v.iter().cloned(),
                    Work::Texts(_) => unreachable!("a batch holds one kind"),
                })
                .collect();
            encoder.encode_pixels(&all)
        }
        Work::Texts(_) => {
            let all: Vec<Vec<u32>> = works
                .iter()
                .flat_map(|w| match w {
                    Work::Texts(v) => v.iter().cloned(),
                    Work::Images(_) => unreachable!("a batch holds one kind"),
                })
                .collect();
            encoder.encode_token_ids(&all)
        }
    };
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(out)) if out.len() == expected => Ok(out),
        Ok(Ok(out)) => Err(EngineError::Failed(format!(
            "the engine returned {} embeddings for {expected} inputs",
            out.len()
        ))),
        Ok(Err(e)) => Err(EngineError::Failed(e)),
        Err(panic) => Err(EngineError::Panicked(panic_message(panic.as_ref()))),
    }
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Embeds an image as its first value and a text as its first id; panics on the value
    /// 13, fails on 7; counts calls and records their sizes.
    #[derive(Default)]
    struct Fake {
        entered: AtomicUsize,
        calls: AtomicUsize,
        sizes: Mutex<Vec<usize>>,
        gate: Mutex<()>,
    }

    impl Encoder for Fake {
        fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _held = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.sizes.lock().unwrap().push(images.len());
            if images.iter().any(|i| i[0] == 13.0) {
                panic!("thirteen");
            }
            if images.iter().any(|i| i[0] == 7.0) {
                return Err("seven".into());
            }
            Ok(images.iter().map(|i| vec![i[0]]).collect())
        }

        fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(ids.iter().map(|i| vec![i[0] as f32]).collect())
        }
    }

    fn images(values: &[f32]) -> Work {
        Work::Images(values.iter().map(|&v| vec![v]).collect())
    }

    fn start(fake: &Arc<Fake>, max_images: usize) -> (Batcher, JoinHandle<()>) {
        let limits = BatchLimits {
            max_images,
            max_tokens: 1000,
        };
        Batcher::start(fake.clone(), limits, Arc::new(Metrics::default()))
    }

    /// Waits (yielding to the runtime) until `done` holds, for at most 10 s.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("timed out waiting");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn waiting_requests_are_coalesced_and_answered_in_order() {
        let fake = Arc::new(Fake::default());
        let (batcher, handle) = start(&fake, 64);
        let rt = runtime();
        // Hold the engine busy so that the next requests queue up behind the first.
        let held = fake.gate.lock().unwrap();
        let answers = rt.block_on(async {
            let first = tokio::spawn({
                let b = batcher.clone();
                async move { b.submit(images(&[1.0])).await }
            });
            until(|| fake.entered.load(Ordering::SeqCst) >= 1).await;
            let rest: Vec<_> = (2..6)
                .map(|v| {
                    let b = batcher.clone();
                    tokio::spawn(
                        async move { b.submit(images(&[v as f32, 10.0 * v as f32])).await },
                    )
                })
                .collect();
            until(|| batcher.queued() == 4).await;
            drop(held);
            let mut out = vec![first.await.unwrap().unwrap()];
            for r in rest {
                out.push(r.await.unwrap().unwrap());
            }
            out
        });
        assert_eq!(answers[0], vec![vec![1.0]]);
        for (i, a) in answers[1..].iter().enumerate() {
            let v = (i + 2) as f32;
            assert_eq!(a, &vec![vec![v], vec![10.0 * v]]);
        }
        // The first alone, the four waiting ones (8 images) together.
        assert_eq!(*fake.sizes.lock().unwrap(), vec![1, 8]);
        batcher.close();
        handle.join().unwrap();
    }

    #[test]
    fn batches_stop_at_the_image_limit() {
        let fake = Arc::new(Fake::default());
        let (batcher, handle) = start(&fake, 3);
        let rt = runtime();
        let held = fake.gate.lock().unwrap();
        rt.block_on(async {
            let first = tokio::spawn({
                let b = batcher.clone();
                async move { b.submit(images(&[1.0])).await }
            });
            until(|| fake.entered.load(Ordering::SeqCst) >= 1).await;
            let rest: Vec<_> = (0..5)
                .map(|_| {
                    let b = batcher.clone();
                    tokio::spawn(async move { b.submit(images(&[2.0])).await })
                })
                .collect();
            until(|| batcher.queued() == 5).await;
            drop(held);
            first.await.unwrap().unwrap();
            for r in rest {
                r.await.unwrap().unwrap();
            }
        });
        assert_eq!(*fake.sizes.lock().unwrap(), vec![1, 3, 2]);
        batcher.close();
        handle.join().unwrap();
    }

    #[test]
    fn a_panic_or_error_fails_only_its_own_request_and_the_engine_keeps_serving() {
        let fake = Arc::new(Fake::default());
        let (batcher, handle) = start(&fake, 64);
        let rt = runtime();
        let held = fake.gate.lock().unwrap();
        let (first, bad, failing, good) = rt.block_on(async {
            let submit = |w: Work| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(w).await })
            };
            let first = submit(images(&[1.0]));
            until(|| fake.entered.load(Ordering::SeqCst) >= 1).await;
            let bad = submit(images(&[13.0]));
            let failing = submit(images(&[7.0]));
            let good = submit(images(&[2.0]));
            until(|| batcher.queued() == 3).await;
            drop(held);
            (
                first.await.unwrap(),
                bad.await.unwrap(),
                failing.await.unwrap(),
                good.await.unwrap(),
            )
        });
        assert_eq!(first, Ok(vec![vec![1.0]]));
        assert_eq!(bad, Err(EngineError::Panicked("thirteen".into())));
        assert_eq!(failing, Err(EngineError::Failed("seven".into())));
        assert_eq!(good, Ok(vec![vec![2.0]]));
        let after = rt.block_on(batcher.submit(images(&[3.0])));
        assert_eq!(after, Ok(vec![vec![3.0]]));
        batcher.close();
        handle.join().unwrap();
    }

    #[test]
    fn withdrawn_requests_are_not_computed() {
        let fake = Arc::new(Fake::default());
        let metrics = Arc::new(Metrics::default());
        let limits = BatchLimits {
            max_images: 64,
            max_tokens: 1000,
        };
        let (batcher, handle) = Batcher::start(fake.clone(), limits, metrics.clone());
        let rt = runtime();
        let held = fake.gate.lock().unwrap();
        rt.block_on(async {
            let first = tokio::spawn({
                let b = batcher.clone();
                async move { b.submit(images(&[1.0])).await }
            });
            until(|| fake.entered.load(Ordering::SeqCst) >= 1).await;
            // A client that gives up: its future is dropped while queued.
            let gone = tokio::spawn({
                let b = batcher.clone();
                async move { b.submit(images(&[5.0, 5.0])).await }
            });
            until(|| batcher.queued() == 1).await;
            gone.abort();
            assert!(gone.await.unwrap_err().is_cancelled());
            drop(held);
            first.await.unwrap().unwrap();
        });
        let after = rt.block_on(batcher.submit(images(&[3.0])));
        assert_eq!(after, Ok(vec![vec![3.0]]));
        assert_eq!(*fake.sizes.lock().unwrap(), vec![1, 1]);
        assert_eq!(metrics.withdrawn.get(), 1);
        batcher.close();
        handle.join().unwrap();
    }
}
