//! The generation thread: renders images one at a time, fed by a bounded queue.
//!
//! Handlers send `(params, version deltas, span, reply)` and await the reply, so tensor
//! code never runs on the async runtime and a full queue is refused at once (503) instead
//! of piling up. A request whose client went away is skipped before it is rendered.

use crate::backend::{GenerateParams, ModelBackend};
use crate::error::ApiError;
use crate::metrics as m;
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
    reply: oneshot::Sender<Result<Vec<u8>, EngineError>>,
}

/// Handle to the generation thread; cheap to clone.
pub struct Generator<B: ModelBackend> {
    sender: mpsc::Sender<Job<B>>,
    depth: Arc<AtomicUsize>,
}

impl<B: ModelBackend> Clone for Generator<B> {
    fn clone(&self) -> Self {
        Generator {
            sender: self.sender.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<B: ModelBackend> Generator<B> {
    /// Starts the thread. It ends when every `Generator` handle is dropped.
    pub fn spawn(backend: Arc<B>, capacity: usize) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let thread_depth = depth.clone();
        std::thread::Builder::new()
            .name("refact-generate".into())
            .spawn(move || run(backend, receiver, thread_depth))?;
        Ok(Generator { sender, depth })
    }

    /// Requests waiting or being rendered.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Queues one image and waits for its PNG bytes. Fails at once with
    /// `ApiError::Overloaded` when the queue is full.
    pub async fn generate(
        &self,
        params: GenerateParams,
        deltas: B::Deltas,
    ) -> Result<Vec<u8>, ApiError> {
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
        let result = answer
            .await
            .map_err(|_| ApiError::Internal("the generation thread dropped a request".into()))?;
        Ok(result?)
    }
}

fn run<B: ModelBackend>(
    backend: Arc<B>,
    mut receiver: mpsc::Receiver<Job<B>>,
    depth: Arc<AtomicUsize>,
) {
    while let Some(job) = receiver.blocking_recv() {
        let _entered = job.span.enter();
        if job.reply.is_closed() {
            tracing::debug!("client left before its image was rendered; skipped");
        } else {
            let started = Instant::now();
            let result = backend.generate(&job.params, &job.deltas);
            let outcome = if result.is_ok() { "ok" } else { "error" };
            m::record_generate(started.elapsed(), outcome);
            let _ = job.reply.send(result);
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
        let generator = Generator::spawn(Arc::new(model), 1).unwrap();
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
}
