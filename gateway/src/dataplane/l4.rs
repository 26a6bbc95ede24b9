//! Runtime connection routes (TCP and TLS listeners): by SNI hostname, with their
//! backends compiled like any other.

use std::sync::Arc;

use super::hosts::HostIndex;
use super::routes::{Backend, BackendBuilder};
use crate::ir;

/// A listener's connection routes, looked up by SNI.
#[derive(Default)]
pub struct L4Routes {
    routes: Vec<Arc<L4Route>>,
    hosts: HostIndex,
}

/// Where one SNI hostname's (or a TCP listener's) connections go.
pub struct L4Route {
    /// `Kind namespace/name`.
    pub route: String,
    /// Weighted backends.
    pub backends: Vec<Backend>,
    /// Sum of weights.
    pub total_weight: u32,
}

impl L4Routes {
    /// Compiles a listener's routes.
    pub fn build(routes: &[ir::L4Route], backends: &mut BackendBuilder) -> L4Routes {
        L4Routes {
            hosts: HostIndex::new(routes.iter().map(|r| &r.hostname)),
            routes: routes
                .iter()
                .map(|r| {
                    Arc::new(L4Route {
                        route: r.route.clone(),
                        backends: r.backends.iter().map(|b| backends.backend(b)).collect(),
                        total_weight: r.total_weight,
                    })
                })
                .collect(),
        }
    }

    /// The route for a (lowercase) SNI; `None` (no SNI) finds only a `*` route.
    pub fn find(&self, sni: Option<&str>) -> Option<&Arc<L4Route>> {
        self.hosts.find(sni.unwrap_or("")).map(|i| &self.routes[i])
    }

    /// Every route.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<L4Route>> {
        self.routes.iter()
    }
}

impl L4Route {
    /// Weighted random pick; `None` when every weight is 0 or there are no backends.
    pub fn pick_backend(&self) -> Option<&Backend> {
        super::routes::pick_weighted(&self.backends, self.total_weight)
    }
}
