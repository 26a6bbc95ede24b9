//! Standalone configuration provider: polls the config path, and on any change parses,
//! translates and swaps in the new table. A rejected change is logged and counted; the
//! last good table keeps serving.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::resources;
use crate::server::Shared;
use crate::translate::{self, TranslateOptions};

/// Watches one config path (file or directory) by polling its content.
pub struct FileProvider {
    /// File or directory to read.
    path: PathBuf,
    /// Translation options from the command line.
    opts: TranslateOptions,
    /// Hash of the last content seen (good or bad), so a bad change is reported once.
    last_seen: Option<u64>,
}

/// What one poll did.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Unchanged,
    Applied,
    Rejected,
}

impl FileProvider {
    pub fn new(path: PathBuf, opts: TranslateOptions) -> FileProvider {
        FileProvider {
            path,
            opts,
            last_seen: None,
        }
    }

    /// Reads the path; if the content changed, compiles and applies it.
    pub fn poll(&mut self, shared: &Shared) -> PollOutcome {
        let sources = resources::read_sources(&self.path);
        let fingerprint = {
            let mut h = DefaultHasher::new();
            match &sources {
                Ok(s) => {
                    for f in s {
                        f.path.hash(&mut h);
                        f.content.hash(&mut h);
                    }
                }
                Err(e) => e.hash(&mut h),
            }
            h.finish()
        };
        if self.last_seen == Some(fingerprint) {
            return PollOutcome::Unchanged;
        }
        self.last_seen = Some(fingerprint);
        let result = sources
            .map_err(|e| translate::ConfigErrors(vec![e]))
            .and_then(|s| translate::compile(&s, &self.opts));
        match result {
            Ok(table) => {
                for w in &table.warnings {
                    tracing::warn!(path = %self.path.display(), "{w}");
                }
                let ports: Vec<u16> = table.ports.keys().copied().collect();
                shared.table.store(Arc::new(table));
                shared.config_loaded.store(true, Ordering::SeqCst);
                shared.metrics.config_reloads.inc();
                shared.metrics.config_last_reload_ok.set(1);
                shared.table_changed.send_modify(|g| *g += 1);
                tracing::info!(path = %self.path.display(), ?ports, "configuration applied");
                PollOutcome::Applied
            }
            Err(errors) => {
                shared.metrics.config_rejections.inc();
                shared.metrics.config_last_reload_ok.set(0);
                for e in &errors.0 {
                    tracing::error!(path = %self.path.display(), "config error: {e}");
                }
                tracing::error!(
                    path = %self.path.display(),
                    errors = errors.0.len(),
                    "configuration rejected; the last good configuration keeps serving"
                );
                PollOutcome::Rejected
            }
        }
    }

    /// Polls forever (blocking file reads run on the blocking pool).
    pub async fn run(mut self, shared: Arc<Shared>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            let s = shared.clone();
            self = match tokio::task::spawn_blocking(move || {
                self.poll(&s);
                self
            })
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "config provider task failed");
                    return;
                }
            };
        }
    }
}
