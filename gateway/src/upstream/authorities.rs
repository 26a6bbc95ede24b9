//! Endpoint authorities copied per worker.
//!
//! hyper-util's pool keys every request by its authority and clones that key about a
//! dozen times per request (with the client, on checkout, on return). An endpoint's
//! authority lives in the tables every worker shares, so those clones would write one
//! reference count that all workers write, moving its cache line from core to core on
//! every request. Each worker keeps copies of its own instead: the same text, a count no
//! other worker touches.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::uri::Authority;

/// One worker's copies, by text.
#[derive(Default)]
pub struct LocalAuthorities(Mutex<hashbrown::HashMap<Box<str>, Authority>>);

impl LocalAuthorities {
    /// Most copies kept: past it they are dropped and made again as requests use them
    /// (endpoints come and go with their pods).
    const MAX: usize = 4096;

    /// `shared`, as this worker's copy (made on first use). Only this worker locks it.
    pub fn get(&self, shared: &Authority) -> Authority {
        let mut copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = copies.get(shared.as_str()) {
            return local.clone();
        }
        if copies.len() >= Self::MAX {
            copies.clear();
        }
        // The text already parsed as an authority; a fresh buffer holds it.
        let local =
            Authority::from_maybe_shared(Bytes::copy_from_slice(shared.as_str().as_bytes()))
                .unwrap_or_else(|_| shared.clone());
        copies.insert(shared.as_str().into(), local.clone());
        local
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(a: &Authority) -> *const u8 {
        a.as_str().as_ptr()
    }

    #[test]
    fn a_copy_has_the_same_text_in_a_buffer_of_its_own_reused_for_later_requests() {
        let copies = LocalAuthorities::default();
        let shared: Authority = "10.0.0.7:8080".parse().unwrap();
        let first = copies.get(&shared);
        assert_eq!(first, shared);
        assert_eq!(first.as_str(), "10.0.0.7:8080");
        assert_ne!(
            buffer(&first),
            buffer(&shared),
            "the copy must not share the endpoint's buffer"
        );
        let second = copies.get(&shared.clone());
        assert_eq!(
            buffer(&second),
            buffer(&first),
            "the same copy serves every request"
        );
        let other = copies.get(&"10.0.0.8:8080".parse().unwrap());
        assert_eq!(other.as_str(), "10.0.0.8:8080");
        assert_eq!(copies.len(), 2);
    }

    #[test]
    fn past_the_limit_the_copies_are_dropped_and_made_again() {
        let copies = LocalAuthorities::default();
        for i in 0..LocalAuthorities::MAX {
            copies.get(&format!("10.1.{}.{}:80", i / 256, i % 256).parse().unwrap());
        }
        assert_eq!(copies.len(), LocalAuthorities::MAX);
        let next = copies.get(&"10.9.9.9:80".parse().unwrap());
        assert_eq!(next.as_str(), "10.9.9.9:80");
        assert_eq!(copies.len(), 1);
    }
}
