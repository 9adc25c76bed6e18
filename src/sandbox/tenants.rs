//! Who may call and how much: bearer keys from a file, each with its own token bucket and
//! concurrency bound, and the global bound on executions with a queue in front of it.
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The keys of an API keys file: one a line; blank lines and `#` comments are skipped.
pub fn read_keys(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
    let keys: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    anyhow::ensure!(!keys.is_empty(), "{} holds no API key", path.display());
    Ok(keys)
}

/// Requests per second and burst of one key's token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second))
        }
    }
}

struct Tenant {
    bucket: Mutex<Bucket>,
    running: Arc<Semaphore>,
}

/// Why a caller is turned away.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// No key, or one not in the file.
    Unauthorized,
    /// Over its rate or its concurrency: retry after this long.
    Limited { retry_after: Duration, why: &'static str },
}

/// The tenants: keyed, or one anonymous tenant when the service runs without keys.
pub struct Tenants {
    tenants: HashMap<String, Tenant>,
    keyed: bool,
    rate: Rate,
}

const ANONYMOUS: &str = "";

impl Tenants {
    pub fn new(keys: Option<Vec<String>>, rate: Rate, concurrency: usize) -> Tenants {
        let keyed = keys.is_some();
        let names = keys.unwrap_or_else(|| vec![ANONYMOUS.into()]);
        let tenants = names
            .into_iter()
            .map(|k| {
                let tenant = Tenant {
                    bucket: Mutex::new(Bucket { tokens: rate.burst, at: Instant::now() }),
                    running: Arc::new(Semaphore::new(concurrency)),
                };
                (k, tenant)
            })
            .collect();
        Tenants { tenants, keyed, rate }
    }

    /// Admits a request with `authorization` (the header's value): a permit held while it runs.
    pub fn admit(&self, authorization: Option<&str>) -> Result<OwnedSemaphorePermit, Refusal> {
        let key = if self.keyed {
            authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(Refusal::Unauthorized)?
        } else {
            ANONYMOUS
        };
        let tenant = self.tenants.get(key).ok_or(Refusal::Unauthorized)?;
        let permit = tenant.running.clone().try_acquire_owned().map_err(|_| Refusal::Limited {
            retry_after: Duration::from_secs(1),
            why: "too many executions of this key at once",
        })?;
        tenant
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(self.rate, Instant::now())
            .map_err(|retry_after| Refusal::Limited { retry_after, why: "rate limit of this key exceeded" })?;
        Ok(permit)
    }

    /// Whether a key is needed (`/metrics` and the API are then keyed).
    pub fn keyed(&self) -> bool {
        self.keyed
    }
}

/// The global bound: `slots` executions at once, up to `queue` more waiting.
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
}

/// Counts a waiter until dropped (also when the caller goes away while queued).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(slots: usize, queue: usize) -> Admission {
        Admission { slots: Arc::new(Semaphore::new(slots)), waiting: AtomicUsize::new(0), queue }
    }

    /// A slot, after waiting in the queue if need be; `None` when the queue is full.
    pub async fn enter(&self, depth: &prometheus_client::metrics::gauge::Gauge) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _waiting = Waiting(&self.waiting);
        depth.inc();
        let permit = self.slots.clone().acquire_owned().await.ok();
        depth.dec();
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let rate = Rate { per_second: 2.0, burst: 2.0 };
        let t0 = Instant::now();
        let mut b = Bucket { tokens: 2.0, at: t0 };
        assert!(b.take(rate, t0).is_ok());
        assert!(b.take(rate, t0).is_ok());
        let wait = b.take(rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(rate, t0 + Duration::from_millis(500)).is_ok());
        // Idle for long: no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(rate, later).is_ok() && b.take(rate, later).is_ok() && b.take(rate, later).is_err());
    }

    #[test]
    fn keys_are_checked_and_limited_each_on_their_own() {
        let rate = Rate { per_second: 1.0, burst: 1.0 };
        let tenants = Tenants::new(Some(vec!["a".into(), "b".into()]), rate, 8);
        assert_eq!(tenants.admit(None).unwrap_err(), Refusal::Unauthorized);
        assert_eq!(tenants.admit(Some("Bearer c")).unwrap_err(), Refusal::Unauthorized);
        assert_eq!(tenants.admit(Some("a")).unwrap_err(), Refusal::Unauthorized);
        assert!(tenants.admit(Some("Bearer a")).is_ok());
        assert!(matches!(tenants.admit(Some("Bearer a")), Err(Refusal::Limited { .. })));
        assert!(tenants.admit(Some("Bearer b")).is_ok());
    }

    #[test]
    fn concurrency_of_a_key_is_bounded() {
        let rate = Rate { per_second: 100.0, burst: 100.0 };
        let tenants = Tenants::new(None, rate, 1);
        let held = tenants.admit(None).unwrap();
        assert!(matches!(tenants.admit(None), Err(Refusal::Limited { why, .. }) if why.contains("at once")));
        drop(held);
        assert!(tenants.admit(None).is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_turns_callers_away() {
        let depth = prometheus_client::metrics::gauge::Gauge::default();
        let admission = Arc::new(Admission::new(1, 1));
        let first = admission.enter(&depth).await.unwrap();
        let queued = {
            let (admission, depth) = (admission.clone(), depth.clone());
            tokio::spawn(async move { admission.enter(&depth).await.is_some() })
        };
        while depth.get() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(admission.enter(&depth).await.is_none(), "the queue of one is full");
        drop(first);
        assert!(queued.await.unwrap(), "the queued caller gets the slot");
    }
}
