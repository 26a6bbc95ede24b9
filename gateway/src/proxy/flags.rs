//! Response flags as Envoy lists them: every flag a request picked up, in the order they
//! were set, comma-separated. Envoy 1.40 logs `URX,UF` for retries that ran out on a
//! connect failure (the retry state gives up first, then the attempt's failure answers),
//! `URX,UT` on a per-try timeout, `UO,UF` when the retry budget or `maxRetries` stopped
//! the retry, and `URX,DC` when the client leaves mid-body after that.
//!
//! A list is interned once: metric labels and log fields take `&'static str`, and the
//! flags come from a fixed vocabulary, so the lists are few.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

/// Distinct lists kept. Past it a request keeps the flags it had (never reached: the
/// vocabulary is fixed and a request gathers two or three).
const MAX_LISTS: usize = 256;

type Lists = HashMap<(&'static str, &'static str), &'static str>;

/// `flags` followed by `next` (unless `next` is already in it); `next` alone when there
/// were none.
pub fn then(flags: Option<&'static str>, next: &'static str) -> &'static str {
    let Some(flags) = flags else {
        return next;
    };
    if flags.split(',').any(|f| f == next) {
        return flags;
    }
    static LISTS: OnceLock<RwLock<Lists>> = OnceLock::new();
    let lists = LISTS.get_or_init(Default::default);
    let key = (flags, next);
    if let Some(l) = lists
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return l;
    }
    let mut lists = lists.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(l) = lists.get(&key) {
        return l;
    }
    if lists.len() >= MAX_LISTS {
        return flags;
    }
    let list: &'static str = Box::leak(format!("{flags},{next}").into_boxed_str());
    lists.insert(key, list);
    list
}

#[cfg(test)]
mod tests {
    use super::then;

    #[test]
    fn flags_are_listed_in_the_order_set_once_each_and_interned() {
        assert_eq!(then(None, "UF"), "UF");
        let list = then(Some("URX"), "UF");
        assert_eq!(list, "URX,UF");
        assert_eq!(then(Some(list), "DC"), "URX,UF,DC");
        assert_eq!(
            then(Some(list), "UF"),
            "URX,UF",
            "a flag already set is not repeated"
        );
        assert_eq!(then(Some(list), "URX"), "URX,UF");
        assert!(
            std::ptr::eq(then(Some("URX"), "UF"), list),
            "the same list is the same string: the interned one"
        );
    }
}
