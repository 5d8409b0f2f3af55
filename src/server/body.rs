//! Reading a request body: refused past the size limit (413), and held
//! only within a budget of body bytes for all requests at once, so that
//! memory is bounded by the budget rather than by connections times streams
//! times the size limit. A request that finds the budget spent waits for
//! room, up to a short time, then gets 503 with `Retry-After`; while it
//! waits its body is not read, so flow control holds the client back.

use std::sync::Arc;
use std::time::Duration;

use axum::BoxError;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use hyper::body::Body as HttpBody;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bytes of request bodies held at once.
#[derive(Debug)]
pub(super) struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// How long a request waits for room before it is refused.
    wait: Duration,
}

/// Bytes of the budget held by one request, given back when dropped.
pub(super) struct Held {
    _permits: Vec<OwnedSemaphorePermit>,
    pub bytes: usize,
}

pub(super) enum BodyError {
    /// Over the limit. `rest` is the unread remainder, `budget` how much of
    /// it may still be read to let the client finish writing (0: too much).
    TooLarge {
        rest: Body,
        budget: usize,
    },
    /// The budget had no room within the wait.
    Busy,
    Read(axum::Error),
}

impl BodyBudget {
    pub(super) fn new(total: usize, wait: Duration) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            wait,
        }
    }

    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// `bytes` of the budget, waiting up to the wait; `None` if it has no
    /// room that soon (or never could: more than the whole budget).
    async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes).ok().filter(|_| bytes <= self.total)?;
        if let Ok(permit) = self.bytes.clone().try_acquire_many_owned(permits) {
            return Some(permit);
        }
        tokio::time::timeout(self.wait, self.bytes.clone().acquire_many_owned(permits))
            .await
            .ok()?
            .ok()
    }

    /// Reads the whole body, refusing it as soon as it is known to exceed
    /// `limit`: at once when the declared Content-Length says so, else when
    /// the bytes read pass it. The budget is taken before the bytes are read
    /// (all of the declared length at once, or chunk by chunk without one).
    /// A body in one chunk (the usual case) is not copied.
    pub(super) async fn read<B>(
        &self,
        mut body: B,
        limit: usize,
    ) -> Result<(Bytes, Held), BodyError>
    where
        B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let declared = body.size_hint().lower();
        if declared > limit as u64 {
            let budget = if declared <= 2 * limit as u64 {
                usize::try_from(declared).unwrap_or(0)
            } else {
                0
            };
            return Err(BodyError::TooLarge {
                rest: Body::new(body),
                budget,
            });
        }
        let declared = usize::try_from(declared).unwrap_or(0);
        let mut held = Held {
            _permits: Vec::with_capacity(1),
            bytes: 0,
        };
        if declared > 0 {
            held._permits
                .push(self.take(declared).await.ok_or(BodyError::Busy)?);
            held.bytes = declared;
        }
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| BodyError::Read(axum::Error::new(error)))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            total = total.saturating_add(data.len());
            if total > limit {
                return Err(BodyError::TooLarge {
                    rest: Body::new(body),
                    budget: limit,
                });
            }
            if total > held.bytes {
                // More than declared (or nothing was): take the rest now.
                let more = total - held.bytes;
                held._permits
                    .push(self.take(more).await.ok_or(BodyError::Busy)?);
                held.bytes = total;
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                previous => {
                    if let Some(previous) = previous {
                        joined.reserve(declared.max(total));
                        joined.extend_from_slice(&previous);
                    }
                    joined.extend_from_slice(&data);
                }
            }
        }
        Ok((first.unwrap_or_else(|| Bytes::from(joined)), held))
    }

    /// Bytes of the budget in use now.
    pub(super) fn in_use(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }
}

/// Reads and drops what is left of a refused body, at most `budget` bytes.
pub(super) async fn discard(mut body: Body, mut budget: usize) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            let Some(left) = budget.checked_sub(data.len()) else {
                return;
            };
            budget = left;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_for_room_then_is_refused() {
        let budget = BodyBudget::new(100, Duration::from_millis(50));
        let (_, held) = budget
            .read(Body::from(vec![b'x'; 80]), 1000)
            .await
            .ok()
            .unwrap();
        assert_eq!(budget.in_use(), 80);
        assert!(matches!(
            budget.read(Body::from(vec![b'x'; 30]), 1000).await,
            Err(BodyError::Busy)
        ));
        // Room comes back when the first request is done.
        drop(held);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.read(Body::from(vec![b'x'; 30]), 1000).await.is_ok());
        // Never more than the whole budget.
        assert!(matches!(
            budget.read(Body::from(vec![b'x'; 101]), 1000).await,
            Err(BodyError::Busy)
        ));
    }

    #[tokio::test]
    async fn a_waiting_request_gets_in_when_room_is_freed() {
        let budget = Arc::new(BodyBudget::new(100, Duration::from_secs(10)));
        let (_, held) = budget
            .read(Body::from(vec![b'x'; 90]), 1000)
            .await
            .ok()
            .unwrap();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.read(Body::from(vec![b'y'; 20]), 1000).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(held);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn an_over_limit_body_is_refused_by_its_length() {
        let budget = BodyBudget::new(1 << 20, Duration::from_millis(10));
        assert!(matches!(
            budget.read(Body::from(vec![b'x'; 2000]), 1000).await,
            Err(BodyError::TooLarge { budget: 2000, .. })
        ));
        assert_eq!(budget.in_use(), 0);
    }
}
