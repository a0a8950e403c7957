//! Records a history from many tokio tasks at once.
//!
//! One [`Recorder`] owns the run's monotonic clock: `time_ns` of every event is the time since
//! the recorder was created ([`Recorder::now_ns`]). Tasks, which are shell scripts and cannot read
//! that clock, compute their execution-log times from the wall clock minus
//! [`Recorder::origin_wall_ns`] (the wall clock read at the same moment as the origin): on one
//! host, without clock steps, the two agree to well under a millisecond over a run.

use std::path::Path;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Instant;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use crate::history::Event;
use crate::history::EventType;
use crate::history::History;
use crate::history::OpValue;
use crate::history::ProcessId;

/// Appends events with monotonic timestamps; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    origin_wall_ns: u64,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        let origin = Instant::now();
        let origin_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Recorder {
            origin,
            origin_wall_ns,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The wall clock (ns since the Unix epoch) at the origin.
    pub fn origin_wall_ns(&self) -> u64 {
        self.origin_wall_ns
    }

    /// Appends an event stamped now. The timestamp is taken under the lock, so events are in
    /// time order in the history. Returns the timestamp.
    pub fn record(&self, process: ProcessId, kind: EventType, value: OpValue) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let time_ns = self.now_ns();
        let line = events.len() + 1;
        events.push(Event {
            process,
            kind,
            value,
            time_ns,
            line,
        });
        time_ns
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History {
            events: self.events.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    /// Number of events so far.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the history as JSON lines to `path`.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let text = self.history().to_jsonl().map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReadValue;

    #[test]
    fn records_in_time_order_and_round_trips() {
        let r = Recorder::new();
        r.record(1, EventType::Invoke, OpValue::Read(ReadValue::default()));
        r.record(1, EventType::Ok, OpValue::Read(ReadValue::default()));
        let h = r.history();
        assert_eq!(h.events.len(), 2);
        assert!(h.events[0].time_ns <= h.events[1].time_ns);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        r.write_jsonl(&path).unwrap();
        let back = History::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.ops().unwrap().len(), 1);
    }
}
