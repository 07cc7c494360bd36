//! The generation thread: renders images in batches, fed by a bounded queue.
//!
//! Handlers send `(params, version deltas, span, reply)` and await the reply, so tensor
//! code never runs on the async runtime and a full queue is refused at once (503) instead
//! of piling up. The thread takes the oldest request, gathers more that share its
//! [`BatchKey`] (size, steps, scheduler, guidance on or off), and renders up to
//! `max_batch` of them in one denoising loop, each row at its own version, prompt, seed
//! and guidance scale; requests of other keys keep their place for the next batch.
//!
//! Waiting for company (up to `max_wait`) only pays when requests overlap, so the thread
//! waits only when it has seen them overlap: the last batch had more than one image, the
//! oldest request had to queue behind a render, or it is one image of a multi-image
//! request whose others are on their way. A lone request on an idle server starts at
//! once: waiting would only add `max_wait` to its latency.
//! A request whose client went away (or whose request timeout fired: the handler is
//! dropped either way) is skipped before it is rendered, and a batch stops at the next
//! step once all of its clients are gone. On shutdown, new requests are refused and
//! queued ones are still made until the grace period ends (see [`Shutdown`]).

use crate::backend::{BatchKey, GenerateParams, ModelBackend};
use crate::error::ApiError;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use refact_engine::EngineError;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Span;

struct Job<B: ModelBackend> {
    key: BatchKey,
    params: GenerateParams,
    deltas: B::Deltas,
    span: Span,
    queued_at: Instant,
    /// Images of the same request queued after this one (`num_images` − 1 for its first).
    siblings: usize,
    reply: oneshot::Sender<Result<Rendered, ApiError>>,
}

/// One rendered image.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub png: Vec<u8>,
    /// How many images its batch rendered (1: alone).
    pub batch_size: usize,
}

/// How requests are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPolicy {
    /// Images per batch at most (1: no batching).
    pub max_batch: usize,
    /// How long the oldest request waits for others to join its batch, when requests
    /// overlap (see the module's documentation).
    pub max_wait: Duration,
}

impl BatchPolicy {
    /// One image at a time.
    pub const SINGLE: BatchPolicy = BatchPolicy {
        max_batch: 1,
        max_wait: Duration::ZERO,
    };
}

/// Handle to the generation thread; cheap to clone.
pub struct Generator<B: ModelBackend> {
    sender: mpsc::SyncSender<Job<B>>,
    depth: Arc<AtomicUsize>,
    /// Images rendered since the thread started.
    rendered: Arc<AtomicU64>,
    shutdown: Arc<Shutdown>,
}

impl<B: ModelBackend> Clone for Generator<B> {
    fn clone(&self) -> Self {
        Generator {
            sender: self.sender.clone(),
            depth: self.depth.clone(),
            rendered: self.rendered.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<B: ModelBackend> Generator<B> {
    /// Starts the thread with a queue of `capacity` requests. It ends when every
    /// `Generator` handle is dropped.
    pub fn spawn(
        backend: Arc<B>,
        capacity: usize,
        policy: BatchPolicy,
        shutdown: Arc<Shutdown>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let rendered = Arc::new(AtomicU64::new(0));
        let thread = GenerationThread {
            backend,
            receiver,
            waiting: VecDeque::new(),
            policy,
            last_batch_shared: false,
            model_freed_at: Cell::new(None),
            depth: depth.clone(),
            rendered: rendered.clone(),
            shutdown: shutdown.clone(),
        };
        std::thread::Builder::new()
            .name("refact-generate".into())
            .spawn(move || thread.run())?;
        Ok(Generator {
            sender,
            depth,
            rendered,
            shutdown,
        })
    }

    /// Requests waiting or being rendered.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Images rendered since the thread started (users' and quality gates').
    pub fn rendered(&self) -> u64 {
        self.rendered.load(Ordering::Relaxed)
    }

    /// Queues one image and waits for it. Fails at once with
    /// `ApiError::Overloaded` when the queue is full and `ApiError::ShuttingDown` once
    /// the server drains.
    pub async fn generate(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
    ) -> Result<Rendered, ApiError> {
        let answer = self.queue(params, deltas, 0)?;
        answer.await.map_err(|_| dropped())?
    }

    /// Queues the images of one request (`num_images` of them, one `params` each) and
    /// waits for them all, in order. The first tells the thread how many follow, so it
    /// waits for them (up to `max_wait`) and they share a batch where `max_batch` allows.
    /// If the queue is full part way, the error is returned and the images already queued
    /// are skipped when their turn comes (nobody waits for them).
    pub async fn generate_group(
        &self,
        rows: Vec<GenerateParams>,
        deltas: B::Deltas,
    ) -> Result<Vec<Rendered>, ApiError>
    where
        B::Deltas: Clone,
    {
        let count = rows.len();
        let mut answers = Vec::with_capacity(count);
        for (i, params) in rows.into_iter().enumerate() {
            answers.push(self.queue(params, deltas.clone(), count - 1 - i)?);
        }
        let mut rendered = Vec::with_capacity(count);
        for answer in answers {
            rendered.push(answer.await.map_err(|_| dropped())??);
        }
        Ok(rendered)
    }

    /// Puts one image in the queue; fails at once when the queue is full.
    fn queue(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
        siblings: usize,
    ) -> Result<oneshot::Receiver<Result<Rendered, ApiError>>, ApiError> {
        let (job, answer) = self.job(params, deltas, siblings)?;
        if let Err(err) = self.sender.try_send(job) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match err {
                TrySendError::Full(_) => {
                    ApiError::Overloaded("the generation queue is full; retry shortly".into())
                }
                TrySendError::Disconnected(_) => thread_stopped(),
            });
        }
        m::set_generate_queue_depth(self.depth());
        Ok(answer)
    }

    /// Queues one image and waits for it, blocking the calling thread: for work that runs
    /// on a blocking thread (an edit's quality gate). A full queue is waited out, not
    /// refused: an edit must not fail because users keep the queue busy. Fails with
    /// `ApiError::ShuttingDown` once the server drains.
    pub fn generate_blocking(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
    ) -> Result<Rendered, ApiError> {
        let (job, answer) = self.job(params, deltas, 0)?;
        if self.sender.send(job).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(thread_stopped());
        }
        m::set_generate_queue_depth(self.depth());
        answer.blocking_recv().map_err(|_| dropped())?
    }

    /// A job for `params` at `deltas`, counted in the queue depth, and where its answer
    /// will arrive; refused once the server drains.
    #[allow(clippy::type_complexity)]
    fn job(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
        siblings: usize,
    ) -> Result<(Job<B>, oneshot::Receiver<Result<Rendered, ApiError>>), ApiError> {
        if self.shutdown.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key: BatchKey::of(&params),
            params,
            deltas,
            span: Span::current(),
            queued_at: Instant::now(),
            siblings,
            reply,
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok((job, answer))
    }
}

fn dropped() -> ApiError {
    ApiError::Internal("the generation thread dropped a request".into())
}

fn thread_stopped() -> ApiError {
    ApiError::Internal("the generation thread has stopped".into())
}

/// The thread's side: the queue, and the requests taken out of it that wait for a
/// batch of their own key.
struct GenerationThread<B: ModelBackend> {
    backend: Arc<B>,
    receiver: mpsc::Receiver<Job<B>>,
    waiting: VecDeque<Job<B>>,
    policy: BatchPolicy,
    /// Whether the last batch had more than one image: requests overlap.
    last_batch_shared: bool,
    /// When the last render's answers started to go out; a request queued before then
    /// had to wait for the model. Set before the answers, not after the render returns,
    /// so that a client's next request cannot seem to have queued behind the render that
    /// answered it.
    model_freed_at: Cell<Option<Instant>>,
    depth: Arc<AtomicUsize>,
    rendered: Arc<AtomicU64>,
    shutdown: Arc<Shutdown>,
}

impl<B: ModelBackend> GenerationThread<B> {
    fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            self.last_batch_shared = batch.len() > 1;
            self.render(batch);
        }
    }

    /// Whether requests have been seen to overlap, for a batch that starts as `batch`:
    /// the last batch had company, the oldest request queued behind a render, or others
    /// were already waiting.
    fn requests_overlap(&self, batch: &[Job<B>]) -> bool {
        let queued_behind_a_render = self
            .model_freed_at
            .get()
            .is_some_and(|freed| batch[0].queued_at < freed);
        self.last_batch_shared || queued_behind_a_render || batch.len() > 1
    }

    /// The oldest request and the ones that can join it; `None` once every handle is
    /// gone and nothing waits.
    fn next_batch(&mut self) -> Option<Vec<Job<B>>> {
        let first = match self.waiting.pop_front() {
            Some(job) => job,
            None => self.receiver.recv().ok()?,
        };
        let max = self.policy.max_batch.max(1);
        let mut batch = vec![first];
        // Requests already taken out of the queue first, in their order.
        let mut index = 0;
        while batch.len() < max && index < self.waiting.len() {
            if self.waiting[index].key == batch[0].key {
                batch.extend(self.waiting.remove(index));
            } else {
                index += 1;
            }
        }
        // Requests already in the queue join either way; the wait is for overlapping
        // requests, or for the other images of the first one's request (once they are
        // in, a lone request stops waiting).
        let overlap = self.requests_overlap(&batch);
        let deadline = Instant::now() + self.policy.max_wait;
        while batch.len() < max {
            let now = Instant::now();
            let siblings_due = batch.len() <= batch[0].siblings;
            let job = match self.receiver.try_recv() {
                Ok(job) => job,
                Err(_) if now >= deadline || !(overlap || siblings_due) => break,
                Err(_) => match self.receiver.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            if job.key == batch[0].key {
                batch.push(job);
            } else {
                self.waiting.push_back(job);
            }
        }
        Some(batch)
    }

    fn render(&self, batch: Vec<Job<B>>) {
        let started = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            m::record_generate_queue_wait(started.duration_since(job.queued_at));
            if job.reply.is_closed() {
                let _entered = job.span.enter();
                tracing::debug!("client left before its image was rendered; skipped");
                self.finished(1);
            } else if self.shutdown.is_expired() {
                self.finished(1);
                let _ = job.reply.send(Err(ApiError::ShuttingDown));
            } else {
                live.push(job);
            }
        }
        if live.is_empty() {
            return;
        }
        m::record_generate_batch(live.len());
        let results = self.render_rows(&live);
        let elapsed = started.elapsed();
        for (job, result) in live.iter().zip(&results) {
            let _entered = job.span.enter();
            let outcome = match result {
                Ok(_) => "ok",
                Err(EngineError::Cancelled) => "cancelled",
                Err(_) => "error",
            };
            m::record_generate(elapsed, outcome);
            if matches!(result, Err(EngineError::Cancelled)) && !self.shutdown.is_expired() {
                tracing::info!(?elapsed, "client left; render stopped");
            }
        }
        // Counted out before the answers go, so a client that has its answer sees a
        // queue without itself.
        let batch_size = live.len();
        let images = results.iter().filter(|r| r.is_ok()).count();
        self.model_freed_at.set(Some(Instant::now()));
        self.rendered.fetch_add(images as u64, Ordering::Relaxed);
        self.finished(batch_size);
        for (job, result) in live.into_iter().zip(results) {
            let answer = match result {
                Err(EngineError::Cancelled) if self.shutdown.is_expired() => {
                    Err(ApiError::ShuttingDown)
                }
                Ok(png) => Ok(Rendered { png, batch_size }),
                Err(err) => Err(err.into()),
            };
            let _ = job.reply.send(answer);
        }
    }

    /// One result per row. A batch that fails is rendered again row by row, so that one
    /// bad row fails alone.
    fn render_rows(&self, jobs: &[Job<B>]) -> Vec<Result<Vec<u8>, EngineError>> {
        let rows: Vec<(&GenerateParams, &B::Deltas)> =
            jobs.iter().map(|job| (&job.params, &job.deltas)).collect();
        // A batch stops once all of its clients are gone, or at the end of the grace.
        let stopped = || self.shutdown.is_expired() || jobs.iter().all(|j| j.reply.is_closed());
        let _entered = jobs[0].span.enter();
        match self.backend.generate_batch(&rows, &stopped) {
            Ok(images) if images.len() == jobs.len() => images.into_iter().map(Ok).collect(),
            Ok(images) => {
                let message = format!("{} images for {} rows", images.len(), jobs.len());
                jobs.iter()
                    .map(|_| Err(EngineError::Numerical(message.clone())))
                    .collect()
            }
            Err(EngineError::Cancelled) => {
                jobs.iter().map(|_| Err(EngineError::Cancelled)).collect()
            }
            Err(err) if jobs.len() == 1 => vec![Err(err)],
            Err(err) => {
                tracing::warn!(error = %err, rows = jobs.len(), "batch failed; rendering its rows one by one");
                jobs.iter()
                    .map(|job| {
                        let stopped = || self.shutdown.is_expired() || job.reply.is_closed();
                        self.backend.generate(&job.params, &job.deltas, &stopped)
                    })
                    .collect()
            }
        }
    }

    fn finished(&self, count: usize) {
        self.depth.fetch_sub(count, Ordering::Relaxed);
        m::set_generate_queue_depth(self.depth.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::ScriptedModel;

    fn params(prompt: &str) -> GenerateParams {
        GenerateParams {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: 1,
            guidance_scale: 1.0,
            width: 8,
            height: 8,
            seed: 0,
            scheduler: None,
        }
    }

    type Answer = tokio::task::JoinHandle<Result<Rendered, ApiError>>;

    /// A generator with a queue of one, filled: an image at `running_deltas` deltas blocks
    /// the thread until `ticks` sends, and an image at no delta waits in the queue.
    async fn full_queue(
        running_deltas: Vec<usize>,
    ) -> (Generator<ScriptedModel>, mpsc::Sender<()>, Answer, Answer) {
        let (model, ticks) = ScriptedModel::new();
        let generator = Generator::spawn(
            Arc::new(model),
            1,
            BatchPolicy::SINGLE,
            Arc::new(Shutdown::default()),
        )
        .unwrap();
        let running = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), running_deltas).await }
        });
        // Give the thread time to take it out of the queue.
        settle(&generator, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("plain"), vec![]).await }
        });
        while generator.depth() < 2 {
            tokio::task::yield_now().await;
        }
        (generator, ticks, running, queued)
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_queued_work_still_completes() {
        // One image blocks the thread, one waits in the queue: the third is refused.
        let (generator, ticks, running, queued) = full_queue(vec![1, 2]).await;
        let refused = generator.generate(params("plain"), vec![]).await;
        assert!(
            matches!(refused, Err(ApiError::Overloaded(_))),
            "{refused:?}"
        );

        ticks.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().png, b"2 deltas");
        assert_eq!(queued.await.unwrap().unwrap().png, b"0 deltas");
        assert_eq!(generator.depth(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_render_waits_out_a_full_queue_instead_of_failing() {
        let (generator, ticks, running, queued) = full_queue(vec![1]).await;
        // The queue is full: a user's request is refused, a gate's image waits.
        let gate = tokio::task::spawn_blocking({
            let g = generator.clone();
            move || g.generate_blocking(params("plain"), vec![7, 7, 7])
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !gate.is_finished(),
            "the blocking render gave up on a full queue"
        );

        ticks.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().png, b"1 deltas");
        assert_eq!(queued.await.unwrap().unwrap().png, b"0 deltas");
        assert_eq!(gate.await.unwrap().unwrap().png, b"3 deltas");
        assert_eq!(generator.rendered(), 3);
        assert_eq!(generator.depth(), 0);
    }

    /// Waits until the thread has taken every queued job out of the queue and finished
    /// all but `running` of them.
    async fn settle(generator: &Generator<ScriptedModel>, depth: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while generator.depth() != depth {
            assert!(
                std::time::Instant::now() < deadline,
                "depth {}",
                generator.depth()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_render_stops_when_its_client_goes_away() {
        let (model, _ticks) = ScriptedModel::new();
        let generator = Generator::spawn(
            Arc::new(model),
            4,
            BatchPolicy::SINGLE,
            Arc::new(Shutdown::default()),
        )
        .unwrap();
        // No tick ever comes: only the dropped request can end this render.
        let abandoned = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), vec![]).await }
        });
        settle(&generator, 1).await;
        abandoned.abort();
        settle(&generator, 0).await;
        // The thread is free again.
        assert_eq!(
            generator
                .generate(params("plain"), vec![1])
                .await
                .unwrap()
                .png,
            b"1 deltas"
        );
    }

    #[tokio::test]
    async fn on_shutdown_new_renders_are_refused_queued_ones_made_until_the_grace_ends() {
        let (model, ticks) = ScriptedModel::new();
        let shutdown = Arc::new(Shutdown::default());
        let generator =
            Generator::spawn(Arc::new(model), 4, BatchPolicy::SINGLE, shutdown.clone()).unwrap();
        let running = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), vec![]).await }
        });
        settle(&generator, 1).await;
        let queued = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), vec![1]).await }
        });
        settle(&generator, 2).await;
        shutdown.begin();
        let refused = generator.generate(params("plain"), vec![]).await;
        assert!(
            matches!(refused, Err(ApiError::ShuttingDown)),
            "{refused:?}"
        );
        // Draining: the running render still finishes.
        ticks.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().png, b"0 deltas");
        // The grace ends while the queued one runs: it stops and answers 503.
        settle(&generator, 1).await;
        shutdown.expire();
        let stopped = queued.await.unwrap();
        assert!(
            matches!(stopped, Err(ApiError::ShuttingDown)),
            "{stopped:?}"
        );
        let response = axum::response::IntoResponse::into_response(ApiError::ShuttingDown);
        assert_eq!(
            response.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(response.headers()["retry-after"], "1");
    }

    /// A generator over a scripted model whose batches wait for company up to ten
    /// minutes, which no test sits out: a request that waits makes its test time out.
    fn patient_generator(
        max_batch: usize,
    ) -> (
        Arc<ScriptedModel>,
        Generator<ScriptedModel>,
        mpsc::Sender<()>,
    ) {
        let (model, ticks) = ScriptedModel::new();
        let model = Arc::new(model);
        let policy = BatchPolicy {
            max_batch,
            max_wait: std::time::Duration::from_secs(600),
        };
        let generator =
            Generator::spawn(model.clone(), 8, policy, Arc::new(Shutdown::default())).unwrap();
        (model, generator, ticks)
    }

    /// `request`, or a failure if it took long enough to have waited for company.
    async fn promptly<T>(request: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(60), request)
            .await
            .expect("the request waited for company that was not coming")
    }

    #[tokio::test]
    async fn a_lone_request_on_an_idle_server_starts_at_once() {
        let (model, generator, _ticks) = patient_generator(8);
        for deltas in 0..3usize {
            let answer = promptly(generator.generate(params("plain"), vec![0; deltas]))
                .await
                .unwrap();
            assert_eq!(answer.png, format!("{deltas} deltas").into_bytes());
            assert_eq!(answer.batch_size, 1);
        }
        assert_eq!(model.batches.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_images_of_one_request_share_a_batch_without_waiting_for_strangers() {
        let (model, generator, _ticks) = patient_generator(8);
        let rows = (0..3).map(|_| params("plain")).collect();
        let answers = promptly(generator.generate_group(rows, vec![1]))
            .await
            .unwrap();
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|a| a.batch_size == 3), "{answers:?}");
        assert_eq!(model.batches.lock().unwrap().len(), 1);
        assert_eq!(generator.depth(), 0);
    }

    #[tokio::test]
    async fn requests_that_queued_behind_a_render_wait_for_company() {
        let (_model, generator, ticks) = patient_generator(3);
        // The first starts at once and holds the thread until a tick.
        let running = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), vec![]).await }
        });
        settle(&generator, 1).await;
        // Two queue behind it; when the thread is free they wait for a third, which
        // comes after the render ended.
        let queued: Vec<_> = (1..3usize)
            .map(|deltas| {
                let g = generator.clone();
                tokio::spawn(async move { g.generate(params("plain"), vec![0; deltas]).await })
            })
            .collect();
        settle(&generator, 3).await;
        ticks.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().batch_size, 1);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            queued.iter().all(|q| !q.is_finished()),
            "the queued requests did not wait for company"
        );
        let last = promptly(generator.generate(params("plain"), vec![0; 3]))
            .await
            .unwrap();
        assert_eq!(last.batch_size, 3);
        for (deltas, request) in (1..3usize).zip(queued) {
            let answer = request.await.unwrap().unwrap();
            assert_eq!(answer.png, format!("{deltas} deltas").into_bytes());
            assert_eq!(answer.batch_size, 3);
        }
    }

    #[tokio::test]
    async fn concurrent_requests_of_one_shape_share_a_batch_and_other_shapes_wait_their_turn() {
        let (model, _ticks) = ScriptedModel::new();
        let model = Arc::new(model);
        let policy = BatchPolicy {
            max_batch: 4,
            max_wait: std::time::Duration::from_millis(300),
        };
        let generator =
            Generator::spawn(model.clone(), 16, policy, Arc::new(Shutdown::default())).unwrap();
        let mut requests = Vec::new();
        for version in 0..8usize {
            let mut p = params("plain");
            // Two requests at another step count: another shape.
            if version >= 6 {
                p.steps = 2;
            }
            let g = generator.clone();
            requests.push(tokio::spawn(async move {
                g.generate(p, vec![0; version]).await.unwrap()
            }));
        }
        for (version, request) in requests.into_iter().enumerate() {
            let answer = request.await.unwrap();
            assert_eq!(
                answer.png,
                format!("{version} deltas").into_bytes(),
                "each row its version"
            );
        }
        let batches = model.batches.lock().unwrap().clone();
        assert_eq!(
            batches.iter().map(Vec::len).sum::<usize>(),
            8,
            "{batches:?}"
        );
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "no batching: {batches:?}"
        );
        for batch in &batches {
            assert!(
                batch.iter().all(|key| *key == batch[0]),
                "mixed shapes: {batches:?}"
            );
        }
        assert_eq!(generator.depth(), 0);
    }
}
