//! refact-store
