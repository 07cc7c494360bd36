//! The generation thread: renders images one at a time, fed by a bounded queue.
//!
//! Handlers send `(params, version deltas, span, reply)` and await the reply, so tensor
//! code never runs on the async runtime and a full queue is refused at once (503) instead
//! of piling up. A request whose client went away (or whose request timeout fired: the
//! handler is dropped either way) is skipped before it is rendered, and a render stops
//! at the next denoising step once that happens. On shutdown, new requests are refused
//! and queued ones are still made until the grace period ends (see [`Shutdown`]).

use crate::backend::{GenerateParams, ModelBackend};
use crate::error::ApiError;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use refact_engine::EngineError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

struct Job<B: ModelBackend> {
    params: GenerateParams,
    deltas: B::Deltas,
    span: Span,
    reply: oneshot::Sender<Result<Vec<u8>, ApiError>>,
}

/// Handle to the generation thread; cheap to clone.
pub struct Generator<B: ModelBackend> {
    sender: mpsc::Sender<Job<B>>,
    depth: Arc<AtomicUsize>,
    shutdown: Arc<Shutdown>,
}

impl<B: ModelBackend> Clone for Generator<B> {
    fn clone(&self) -> Self {
        Generator {
            sender: self.sender.clone(),
            depth: self.depth.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<B: ModelBackend> Generator<B> {
    /// Starts the thread. It ends when every `Generator` handle is dropped.
    pub fn spawn(
        backend: Arc<B>,
        capacity: usize,
        shutdown: Arc<Shutdown>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let thread_depth = depth.clone();
        let thread_shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("refact-generate".into())
            .spawn(move || run(backend, receiver, thread_depth, thread_shutdown))?;
        Ok(Generator {
            sender,
            depth,
            shutdown,
        })
    }

    /// Requests waiting or being rendered.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Queues one image and waits for its PNG bytes. Fails at once with
    /// `ApiError::Overloaded` when the queue is full and `ApiError::ShuttingDown` once
    /// the server drains.
    pub async fn generate(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
    ) -> Result<Vec<u8>, ApiError> {
        if self.shutdown.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            params,
            deltas,
            span: Span::current(),
            reply,
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = self.sender.try_send(job) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match err {
                mpsc::error::TrySendError::Full(_) => {
                    ApiError::Overloaded("the generation queue is full; retry shortly".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::Internal("the generation thread has stopped".into())
                }
            });
        }
        m::set_generate_queue_depth(self.depth());
        answer
            .await
            .map_err(|_| ApiError::Internal("the generation thread dropped a request".into()))?
    }
}

fn run<B: ModelBackend>(
    backend: Arc<B>,
    mut receiver: mpsc::Receiver<Job<B>>,
    depth: Arc<AtomicUsize>,
    shutdown: Arc<Shutdown>,
) {
    while let Some(job) = receiver.blocking_recv() {
        let _entered = job.span.enter();
        if job.reply.is_closed() {
            tracing::debug!("client left before its image was rendered; skipped");
        } else if shutdown.is_expired() {
            let _ = job.reply.send(Err(ApiError::ShuttingDown));
        } else {
            let started = Instant::now();
            let stopped = || job.reply.is_closed() || shutdown.is_expired();
            let result = backend.generate(&job.params, &job.deltas, &stopped);
            let outcome = match &result {
                Ok(_) => "ok",
                Err(EngineError::Cancelled) => "cancelled",
                Err(_) => "error",
            };
            m::record_generate(started.elapsed(), outcome);
            let answer = match result {
                Err(EngineError::Cancelled) if shutdown.is_expired() => Err(ApiError::ShuttingDown),
                Err(EngineError::Cancelled) => {
                    tracing::info!(elapsed = ?started.elapsed(), "client left; render stopped");
                    Err(EngineError::Cancelled.into())
                }
                other => other.map_err(ApiError::from),
            };
            let _ = job.reply.send(answer);
        }
        depth.fetch_sub(1, Ordering::Relaxed);
        m::set_generate_queue_depth(depth.load(Ordering::Relaxed));
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

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_queued_work_still_completes() {
        let (model, ticks) = ScriptedModel::new();
        let generator =
            Generator::spawn(Arc::new(model), 1, Arc::new(Shutdown::default())).unwrap();
        // One image blocks the thread, one waits in the queue: the third is refused.
        let running = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("gated"), vec![1, 2]).await }
        });
        // Wait until the thread has taken it out of the queue.
        while generator.depth() < 1 || generator.sender.capacity() < 1 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let g = generator.clone();
            async move { g.generate(params("plain"), vec![]).await }
        });
        while generator.depth() < 2 {
            tokio::task::yield_now().await;
        }
        let refused = generator.generate(params("plain"), vec![]).await;
        assert!(
            matches!(refused, Err(ApiError::Overloaded(_))),
            "{refused:?}"
        );

        ticks.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), b"2 deltas");
        assert_eq!(queued.await.unwrap().unwrap(), b"0 deltas");
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
        let generator =
            Generator::spawn(Arc::new(model), 4, Arc::new(Shutdown::default())).unwrap();
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
            generator.generate(params("plain"), vec![1]).await.unwrap(),
            b"1 deltas"
        );
    }

    #[tokio::test]
    async fn on_shutdown_new_renders_are_refused_queued_ones_made_until_the_grace_ends() {
        let (model, ticks) = ScriptedModel::new();
        let shutdown = Arc::new(Shutdown::default());
        let generator = Generator::spawn(Arc::new(model), 4, shutdown.clone()).unwrap();
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
        assert_eq!(running.await.unwrap().unwrap(), b"0 deltas");
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
}
