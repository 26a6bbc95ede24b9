//! API errors and their wire form, `metav1.Status`, as the real API server writes them.

use serde_json::{Value, json};

/// Why a request failed; each variant maps to one `reason` and HTTP code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The object or resource does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// No resource is served at this path.
    #[error("the server could not find the requested resource")]
    NotServed,
    /// A create named an object that exists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// A stale resourceVersion precondition, or a server-side apply conflict.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    /// The object failed validation.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Option<Value>,
    },
    /// A resourceVersion older than the watch history (or a new epoch).
    #[error("{0}")]
    Expired(String),
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The verb is not served for this resource.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// A patch content type this resource does not accept.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An injected failure (5xx or 429), with the seconds to put in Retry-After.
    #[error("{message}")]
    Injected {
        code: u16,
        message: String,
        retry_after: Option<u64>,
    },
}

impl ApiError {
    /// The not-found error for `name` of the resource `plural.group`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::NotFound {
            resource: resource.into(),
            name: name.into(),
        }
    }

    /// The 409 a stale resourceVersion gets.
    pub fn stale(resource: &str, name: &str) -> Self {
        Self::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            details: Some(
                json!({"name": name, "kind": resource.split('.').next().unwrap_or(resource)}),
            ),
        }
    }

    /// HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Self::NotFound { .. } | Self::NotServed => 404,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => 409,
            Self::Invalid { .. } => 422,
            Self::Expired(_) => 410,
            Self::BadRequest(_) => 400,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedMediaType(_) => 415,
            Self::Injected { code, .. } => *code,
        }
    }

    /// The `reason` field of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::NotServed => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Invalid { .. } => "Invalid",
            Self::Expired(_) => "Expired",
            Self::BadRequest(_) => "BadRequest",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::Injected { code: 429, .. } => "TooManyRequests",
            Self::Injected { code: 503, .. } => "ServiceUnavailable",
            Self::Injected { .. } => "InternalError",
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            Self::NotFound { resource, name } | Self::AlreadyExists { resource, name } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                let mut d = json!({"name": name, "kind": kind});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            Self::Conflict { details, .. } | Self::Invalid { details, .. } => details.clone(),
            Self::Injected {
                retry_after: Some(s),
                ..
            } => Some(json!({"retryAfterSeconds": s})),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

/// A `Status` with `status: Success`, as DELETE of a custom resource returns.
pub fn success(name: &str, group: &str, plural: &str, uid: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    })
}
