//! A Pingora background service that calls a function every `every` until the server shuts
//! down: forgetting idle rate-limit buckets, handing free GPU slots to queued requests when a
//! backend comes back or a breaker half-opens.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

pub struct Periodic {
    every: Duration,
    tick: Box<dyn Fn() + Send + Sync>,
}

impl Periodic {
    pub fn new(every: Duration, tick: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            every,
            tick: Box::new(tick),
        }
    }
}

#[async_trait]
impl BackgroundService for Periodic {
    /// Runs for the life of the server; returns on shutdown.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut interval = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = interval.tick() => (self.tick)(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
