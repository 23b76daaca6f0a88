//! The one step of an MQTT client's poll loop that both of fieldlab's clients share: await the
//! next event unless cancelled; after a lost connection, say so and wait the back-off.
//!
//! Why it exists: ingest's subscriber (MQTT 3.1.1 and 5) and the emulator's device connections
//! (both versions) each drove rumqttc's event loop with their own copy of "select on
//! cancellation, reconnect after a back-off", which drifted. The event types differ (rumqttc has
//! one event loop per protocol version), so this takes the poll as a future and hands the event
//! back: what an event means stays with its caller, and so does the moment the schedule starts
//! over ([`Backoff::reset`]: ingest on a CONNACK, the emulator on any event). No network types
//! here: the caller's future does the I/O, this only waits (no task is spawned).

use crate::backoff::Backoff;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What became of one [`poll`].
#[derive(Debug)]
pub enum Polled<T> {
    /// The event loop's next event.
    Event(T),
    /// The connection was lost and the back-off waited: poll again (the event loop reconnects).
    Reconnect,
    /// Cancelled: stop polling.
    Cancelled,
}

/// Await `next` (an event loop's poll) unless `cancel` fires first. When it fails: call
/// `lost(error, wait)` with the back-off's next wait (to log it, mark the connection down),
/// then wait that long, unless cancelled meanwhile.
pub async fn poll<T, E>(
    cancel: &CancellationToken,
    backoff: &mut Backoff,
    next: impl Future<Output = Result<T, E>>,
    lost: impl FnOnce(E, Duration),
) -> Polled<T> {
    let polled = tokio::select! {
        _ = cancel.cancelled() => return Polled::Cancelled,
        polled = next => polled,
    };
    match polled {
        Ok(ev) => Polled::Event(ev),
        Err(e) => {
            let wait = backoff.next_delay();
            lost(e, wait);
            tokio::select! {
                _ = cancel.cancelled() => Polled::Cancelled,
                _ = tokio::time::sleep(wait) => Polled::Reconnect,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn waits_the_back_off_after_a_loss_and_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(40));
        let ok = poll(&cancel, &mut backoff, async { Ok::<_, ()>(7) }, |_, _| {}).await;
        assert!(matches!(ok, Polled::Event(7)));

        let mut waits = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let p = poll(
                &cancel,
                &mut backoff,
                async { Err::<(), _>("gone") },
                |e, w| {
                    assert_eq!(e, "gone");
                    waits.push(w);
                },
            )
            .await;
            assert!(matches!(p, Polled::Reconnect));
            assert!(started.elapsed() >= *waits.last().unwrap());
        }
        // backon computes in floating point (39.99999 ms is 40 ms).
        let waits: Vec<_> = waits.iter().map(|w| (w.as_micros() + 500) / 1000).collect();
        assert_eq!(waits, [10, 20, 40]);

        cancel.cancel();
        let p = poll(
            &cancel,
            &mut backoff,
            std::future::pending::<Result<(), ()>>(),
            |_, _| {},
        )
        .await;
        assert!(matches!(p, Polled::Cancelled));
    }

    #[tokio::test]
    async fn cancelling_ends_the_back_off_wait() {
        let cancel = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let started = Instant::now();
        let p = poll(&cancel, &mut backoff, async { Err::<(), _>(()) }, |_, _| {}).await;
        assert!(matches!(p, Polled::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
