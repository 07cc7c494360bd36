//! refact-eval
