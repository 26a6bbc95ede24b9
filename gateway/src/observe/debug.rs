//! Recent request explanations by request id, for admin `GET /debug/requests/<id>`: the
//! edge client sees only a reason code; an operator (or a test) looks up why here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Explanations kept (oldest dropped first).
const CAPACITY: usize = 4096;

/// A bounded log of request explanations; cheap to clone.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<VecDeque<(String, serde_json::Value)>>>);

impl RequestLog {
    /// Records why a request got the answer it got.
    pub fn record(&self, id: &str, explanation: serde_json::Value) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back((id.to_owned(), explanation));
    }

    /// The newest explanation recorded for `id`.
    pub fn get(&self, id: &str) -> Option<serde_json::Value> {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_up_to_capacity() {
        let log = RequestLog::default();
        for i in 0..CAPACITY + 1 {
            log.record(&i.to_string(), serde_json::json!(i));
        }
        assert_eq!(log.get("0"), None);
        assert_eq!(
            log.get(&CAPACITY.to_string()),
            Some(serde_json::json!(CAPACITY))
        );
    }
}
