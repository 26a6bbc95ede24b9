//! Traffic policy: retries on HTTPRoute rules ([`retry`]), DestinationRules, local rate
//! limits, AuthorizationPolicies, and the PROXY protocol ([`client_traffic`]). Each
//! compiles its published shape into plain IR data, naming the object and field at fault.

pub mod authorization;
pub mod client_traffic;
pub mod destination_rule;
pub mod destination_tls;
pub mod rate_limit;
pub mod retry;
