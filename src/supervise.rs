//! A task that dies is noticed: never a relay that looks alive and does nothing.
//!
//! The router thread and every sink and housekeeping task run under a [`Supervisor`]. One that
//! panics, or ends while the relay is not stopping, is recorded with its name and why (logged
//! once); `/healthz` then answers 503 and
//! `edgerelay run` stops and exits non-zero, so the container's restart policy (or systemd)
//! starts a fresh process, which resends from the outboxes. Restarting the task in place was
//! the other choice: a panic means a bug met state we did not foresee, and a clean process
//! with recovered outboxes is the one state we have tested.
//!
//! Fault injection: in debug builds, `EDGERELAY_FAILPOINT=NAME` makes [`failpoint`] `NAME`
//! panic, so tests can prove the above with the real binary. Release builds have no
//! failpoints.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::FutureExt as _;
use tokio::sync::Notify;

/// Records the first task death and wakes whoever waits for one.
#[derive(Debug, Default)]
pub struct Supervisor {
    stopping: AtomicBool,
    dead: Mutex<Option<String>>,
    deaths: AtomicU64,
    notify: Notify,
}

impl Supervisor {
    /// Spawns `fut` on the runtime as task `name`, which runs until the relay stops: a panic
    /// or an end is a death.
    pub fn spawn<F>(
        self: &std::sync::Arc<Self>,
        name: String,
        fut: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(name, fut, true)
    }

    /// Spawns `fut` as task `name`, which ends by itself once its input is gone (the
    /// snapshotter after the router): only a panic is a death.
    pub fn spawn_until_done<F>(
        self: &std::sync::Arc<Self>,
        name: String,
        fut: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(name, fut, false)
    }

    fn spawn_with<F>(
        self: &std::sync::Arc<Self>,
        name: String,
        fut: F,
        end_is_death: bool,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sup = self.clone();
        tokio::spawn(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(()) if end_is_death => sup.died(&name, "ended"),
                Ok(()) => {}
                Err(p) => sup.died(&name, &format!("panicked: {}", panic_message(&*p))),
            }
        })
    }

    /// Runs `f` on a thread named `name`; a panic is a death, a return is not (the router
    /// ends when its sources are gone, which only a shutdown does).
    pub fn spawn_thread<F>(
        self: &std::sync::Arc<Self>,
        name: &str,
        f: F,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let sup = self.clone();
        let task = name.to_string();
        std::thread::Builder::new()
            .name(task.clone())
            .spawn(move || {
                if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
                    sup.died(&task, &format!("panicked: {}", panic_message(&*p)));
                }
            })
    }

    /// The relay is stopping: tasks that end from now on are not deaths.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Task `name` died because of `why` (ignored once the relay is stopping).
    pub fn died(&self, name: &str, why: &str) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        self.deaths.fetch_add(1, Ordering::Relaxed);
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        if dead.is_none() {
            tracing::error!(
                task = name,
                why,
                "a relay task died; the relay stops so that it is restarted"
            );
            *dead = Some(format!("task {name} {why}"));
        }
        drop(dead);
        self.notify.notify_waiters();
    }

    /// The first death, in words (`None`: every task is alive).
    pub fn dead(&self) -> Option<String> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Deaths so far.
    pub fn deaths(&self) -> u64 {
        self.deaths.load(Ordering::Relaxed)
    }

    /// Resolves once a task died; returns why.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(why) = self.dead() {
                return why;
            }
            notified.await;
        }
    }
}

/// The text a panic carried.
fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Panics when `EDGERELAY_FAILPOINT` names this point (debug builds only; tests use it).
#[inline]
pub fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("EDGERELAY_FAILPOINT").is_ok_and(|v| v == name) {
        panic!("failpoint {name}");
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_is_recorded_and_wakes_the_waiter() {
        let sup = Arc::new(Supervisor::default());
        assert_eq!(sup.dead(), None);
        let waiter = tokio::spawn({
            let sup = sup.clone();
            async move { sup.wait().await }
        });
        sup.spawn("sink:cloud".into(), async { panic!("boom") });
        let why = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why, "task sink:cloud panicked: boom");
        assert_eq!(sup.deaths(), 1);
    }

    #[tokio::test]
    async fn a_task_that_ends_is_a_death_and_an_aborted_one_is_not() {
        let sup = Arc::new(Supervisor::default());
        let forever = sup.spawn("expire".into(), std::future::pending());
        forever.abort();
        let _ = forever.await;
        assert_eq!(sup.dead(), None);
        sup.spawn_until_done("snapshots".into(), async {})
            .await
            .unwrap();
        assert_eq!(sup.dead(), None);
        sup.spawn("watch".into(), async {}).await.unwrap();
        assert_eq!(sup.dead().as_deref(), Some("task watch ended"));
    }

    #[test]
    fn a_panicking_thread_is_recorded_and_a_returning_one_is_not() {
        let sup = Arc::new(Supervisor::default());
        sup.spawn_thread("quiet", || {}).unwrap().join().unwrap();
        assert_eq!(sup.dead(), None);
        sup.spawn_thread("router", || panic!("at {}", 3))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(sup.dead().as_deref(), Some("task router panicked: at 3"));
    }
}
