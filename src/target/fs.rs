//! The `file://` target.
