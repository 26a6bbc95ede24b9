//! `gateway-init`: the init container of the meshgate gateway pod. It programs iptables
//! once, in the pod's network namespace, and exits.
//!
//! The path of a run: [`config`] (options and annotation overrides, validated) ->
//! [`plan`] (pure: which rules) -> [`render`] (iptables-restore text) -> [`apply`]
//! (iptables itself), with [`live`] reading back what iptables holds. [`run`] ties them
//! together for the binary.

pub mod annotations;
pub mod apply;
pub mod config;
pub mod istio;
pub mod live;
pub mod loopback;
pub mod plan;
pub mod render;
pub mod run;
