//! Where objects come from: [`file`] (standalone: YAML files, polled) or [`kubernetes`]
//! (watches on the API server). A provider only produces [`crate::api::Snapshot`]s;
//! translating and serving them is not its job.

pub mod file;
pub mod kubernetes;

/// One provider update: the objects, or why they could not be read at all.
pub type Update = Result<crate::api::Snapshot, ParseErrors>;

/// Why a source could not be read or parsed: one line per problem, each naming the file,
/// the document and the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ParseErrors(pub Vec<String>);
