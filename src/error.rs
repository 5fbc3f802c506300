//! The one error type of kalshi-ingest.
//!
//! Every fallible operation returns [`Error`]. Each variant carries the context a user
//! needs to act on it (the path, the URL, the endpoint), its `Display` is one short
//! lowercase line naming what failed and, where there is one, the fix, and
//! [`Error::exit_code`] maps it to the documented exit status.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Exit status: every planned endpoint is complete.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: the run finished and wrote its summary, but an endpoint is incomplete
/// (or `verify` found a problem).
pub(crate) const EXIT_INCOMPLETE: u8 = 1;
/// Exit status: a usage error (bad flag or value) or a fatal error before or outside
/// the endpoint loop (cannot create the run folder, unreachable host on the first request).
pub(crate) const EXIT_FATAL: u8 = 2;

/// Everything that can go wrong, with the context to explain it.
#[derive(Debug)]
pub(crate) enum Error {
    /// A command-line flag or value is wrong; the message says which and what is expected.
    Usage(String),
    /// A file-system operation failed; `action` says what we were doing ("create", "write").
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A state file we read back (run manifest, checkpoint, hash log) is damaged or
    /// from another version; `reason` names the problem and the way out.
    BadFile { path: PathBuf, reason: String },
}

impl Error {
    /// Wraps an I/O error with the action and path it happened on.
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is a write to a pipe whose reader has gone (`| head`).
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The exit status a run that stops on this error ends with.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Io { .. } | Error::BadFile { .. } => EXIT_FATAL,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Io {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {}", path.display(), describe_io(source)),
            Error::BadFile { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A short, lowercase description of an I/O error, with a hint for the common
/// operator-fixable cases.
pub(crate) fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    };
    let mut text = lowercase_first(&text);
    match err.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            text.push_str(" (choose a writable folder with --out)")
        }
        io::ErrorKind::StorageFull => text.push_str(" (free some space, then resume the run)"),
        _ => {}
    }
    text
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_is_one_lowercase_line_with_path_and_hint() {
        let err = Error::io(
            "create",
            Path::new("/ro/out"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("create /ro/out: permission denied"),
            "{text}"
        );
        assert!(text.contains("--out"), "{text}");
        assert!(!text.contains('\n'));
        assert_eq!(err.exit_code(), EXIT_FATAL);
    }
}
