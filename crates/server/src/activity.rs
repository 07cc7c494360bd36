//! This process's image activity over the last hour, minute by minute, for the
//! operations view (Prometheus keeps the long history; this answers "what happened in
//! the last hour" without one). Each replica reports its own in its heartbeat, and the
//! view adds them up.

use serde::Serialize;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Per-minute counts, oldest first, ending with the current minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LastHour {
    /// Images rendered.
    pub images: Vec<u64>,
    /// UNet batches run.
    pub batches: Vec<u64>,
}

struct Ring {
    /// Minute number (since the epoch) of each slot's counts.
    minute: [u64; MINUTES],
    images: [u64; MINUTES],
    batches: [u64; MINUTES],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            minute: [0; MINUTES],
            images: [0; MINUTES],
            batches: [0; MINUTES],
        }
    }
}

impl Ring {
    fn slot(&mut self, minute: u64) -> usize {
        let slot = (minute % MINUTES as u64) as usize;
        if self.minute[slot] != minute {
            self.minute[slot] = minute;
            self.images[slot] = 0;
            self.batches[slot] = 0;
        }
        slot
    }

    fn last_hour(&self, now: u64) -> LastHour {
        let mut hour = LastHour::default();
        for minute in now + 1 - MINUTES as u64..=now {
            let slot = (minute % MINUTES as u64) as usize;
            let fresh = self.minute[slot] == minute;
            hour.images.push(if fresh { self.images[slot] } else { 0 });
            hour.batches
                .push(if fresh { self.batches[slot] } else { 0 });
        }
        hour
    }
}

fn ring() -> &'static Mutex<Ring> {
    static RING: OnceLock<Mutex<Ring>> = OnceLock::new();
    RING.get_or_init(Default::default)
}

fn minute_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs / 60
}

/// Counts one UNet batch of `images` images.
pub fn record_batch(images: usize) {
    let mut ring = ring().lock().expect("activity ring poisoned");
    let slot = ring.slot(minute_now());
    ring.images[slot] += images as u64;
    ring.batches[slot] += 1;
}

/// The last hour of this process.
pub fn last_hour() -> LastHour {
    ring()
        .lock()
        .expect("activity ring poisoned")
        .last_hour(minute_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_older_than_an_hour_are_forgotten() {
        let mut ring = Ring::default();
        let start = 1_000_000;
        let slot = ring.slot(start);
        ring.images[slot] += 3;
        let slot = ring.slot(start + 30);
        ring.images[slot] += 5;
        ring.batches[slot] += 1;
        let hour = ring.last_hour(start + 30);
        assert_eq!(hour.images.len(), MINUTES);
        assert_eq!(hour.images.iter().sum::<u64>(), 8);
        assert_eq!(
            *hour.images.last().unwrap(),
            5,
            "the current minute is last"
        );
        // Sixty minutes on, the first minute has left the window; the slot it used is
        // reused by the new minute and starts from zero.
        let hour = ring.last_hour(start + 60);
        assert_eq!(hour.images.iter().sum::<u64>(), 5);
        let slot = ring.slot(start + 60);
        assert_eq!(ring.images[slot], 0);
    }
}
