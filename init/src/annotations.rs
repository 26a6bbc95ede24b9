//! The pod's annotations as the Kubernetes downward API writes them to a file:
//! one `key="value"` a line, the value quoted with Go's `%q` escapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the annotations file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationsError {
    #[error("annotations file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("annotations file {path} line {line}: {reason}: `{text}`")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: &'static str,
        text: String,
    },
}

/// Annotations by key, and the file they came from (for error messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Where these were read from; empty when built in memory.
    pub source: PathBuf,
    /// The annotations, by key.
    pub values: BTreeMap<String, String>,
}

impl Annotations {
    /// Reads and parses a downward-API annotations file.
    pub fn read(path: &Path) -> Result<Self, AnnotationsError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnnotationsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a downward-API annotations file; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AnnotationsError> {
        let mut values = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let syntax = |reason| AnnotationsError::Syntax {
                path: path.to_owned(),
                line: index + 1,
                reason,
                text: line.to_owned(),
            };
            let (key, value) = line.split_once('=').ok_or_else(|| syntax("no `=`"))?;
            let value = unquote(value.trim()).ok_or_else(|| syntax("badly quoted value"))?;
            values.insert(key.trim().to_owned(), value);
        }
        Ok(Self {
            source: path.to_owned(),
            values,
        })
    }

    /// The value of one annotation, if the pod has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Undoes Go's `%q` quoting; a value without quotes is taken as it is.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_downward_api_lines_with_go_quoting() {
        let text = "kubectl.kubernetes.io/default-container=\"gateway\"\n\
                    traffic.sidecar.istio.io/excludeInboundPorts=\"15020, 15021\"\n\
                    note=\"say \\\"hi\\\"\\n\"\n\n";
        let a = Annotations::parse(Path::new("annotations"), text).unwrap();
        assert_eq!(
            a.get("traffic.sidecar.istio.io/excludeInboundPorts"),
            Some("15020, 15021")
        );
        assert_eq!(a.get("note"), Some("say \"hi\"\n"));
        assert_eq!(a.get("missing"), None);
    }

    #[test]
    fn a_line_without_equals_is_an_error_naming_file_and_line() {
        let err = Annotations::parse(Path::new("/etc/podinfo/annotations"), "a=\"b\"\nbroken\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/podinfo/annotations line 2"), "{err}");
    }

    #[test]
    fn an_unterminated_quote_is_an_error() {
        assert!(Annotations::parse(Path::new("f"), "a=\"b\n").is_err());
    }
}
