//! The bandwidth limit of the pushes to one device.

use std::sync::Mutex;
use std::time::Duration;

use super::lock;

/// The pace of every push to one device: together they send at most `bytes_per_sec`. Each
/// blob sent books the link for as long as its bytes take at that rate, after whatever was
/// booked before; the sender waits until its booking ends. Time the link was idle is not
/// saved up for a burst later.
pub(super) struct Pace {
    bytes_per_sec: u64,
    free_at: Mutex<tokio::time::Instant>,
}

impl Pace {
    pub(super) fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec: bytes_per_sec.max(1),
            free_at: Mutex::new(tokio::time::Instant::now()),
        }
    }

    pub(super) async fn sent(&self, bytes: u64) {
        let until = {
            let mut free_at = lock(&self.free_at);
            let start = (*free_at).max(tokio::time::Instant::now());
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            *free_at
        };
        tokio::time::sleep_until(until).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paced_push_takes_as_long_as_its_limit_says() {
        let start = tokio::time::Instant::now();
        let pace = Pace::new(1_000_000);
        for _ in 0..50 {
            pace.sent(100_000).await;
        }
        // 5 MB at 1 MB/s: five seconds of (virtual) time, not less.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // Idle time is not saved up: after a pause, the next blob still takes its time.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let again = tokio::time::Instant::now();
        pace.sent(500_000).await;
        assert_eq!(again.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn two_pushes_to_one_device_share_its_limit() {
        let start = tokio::time::Instant::now();
        let pace = Arc::new(Pace::new(1_000_000));
        let push = |pace: Arc<Pace>| async move {
            for _ in 0..25 {
                pace.sent(100_000).await;
            }
        };
        let (a, b) = (tokio::spawn(push(pace.clone())), tokio::spawn(push(pace.clone())));
        a.await.expect("push a");
        b.await.expect("push b");
        // 2 × 2.5 MB at 1 MB/s together: five seconds, as one push of 5 MB.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
