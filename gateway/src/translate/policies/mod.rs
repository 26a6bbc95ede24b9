//! Traffic policy: retries on HTTPRoute rules ([`retry`]); later DestinationRules,
//! rate limits and AuthorizationPolicies. Each compiles its published shape into plain
//! IR data, naming the object and field at fault.

pub mod authorization;
pub mod destination_rule;
pub mod rate_limit;
pub mod retry;
