//! Typed reads of one scheduler class's keys: the file's value when it has the key,
//! the class default when it does not (diffusers' `from_config`).

use super::config::SchedulerConfig;
use super::kind::SchedulerKind;
use crate::error::{EngineError, Result};
use serde_json::Value;

/// A config seen by one class; errors name the class and the key.
pub(crate) struct ClassKeys<'a> {
    config: &'a SchedulerConfig,
    kind: SchedulerKind,
}

impl<'a> ClassKeys<'a> {
    pub(crate) fn new(config: &'a SchedulerConfig, kind: SchedulerKind) -> Self {
        ClassKeys { config, kind }
    }

    /// Which class is reading.
    pub(crate) fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// A config error about `key`.
    pub(crate) fn error(&self, key: &str, message: impl std::fmt::Display) -> EngineError {
        EngineError::config(
            self.config.origin(),
            format!("{}: `{key}` {message}", self.kind.class_name()),
        )
    }

    /// A value the file has; JSON null counts as absent for the `opt_*` readers only.
    fn present(&self, key: &str) -> Option<&'a Value> {
        self.config.get(key)
    }

    /// A number (integer or float).
    pub(crate) fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.present(key) {
            None => Ok(default),
            Some(value) => value
                .as_f64()
                .ok_or_else(|| self.error(key, format!("must be a number, not {value}"))),
        }
    }

    /// A number, or `None` when absent or null.
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("must be a number, not {value}"))),
        }
    }

    /// A non-negative integer.
    pub(crate) fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.present(key) {
            None => Ok(default),
            Some(value) => value
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    self.error(key, format!("must be a non-negative integer, not {value}"))
                }),
        }
    }

    /// An integer of either sign.
    pub(crate) fn i64(&self, key: &str, default: i64) -> Result<i64> {
        match self.present(key) {
            None => Ok(default),
            Some(value) => value
                .as_i64()
                .ok_or_else(|| self.error(key, format!("must be an integer, not {value}"))),
        }
    }

    /// A flag. Null reads as false, as Python's truthiness does in diffusers' checks.
    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(value) => Err(self.error(key, format!("must be true or false, not {value}"))),
        }
    }

    /// A string.
    pub(crate) fn str(&self, key: &str, default: &'static str) -> Result<&'a str> {
        match self.present(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(value) => Err(self.error(key, format!("must be a string, not {value}"))),
        }
    }

    /// A string, or `None` when absent or null.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.present(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(value) => Err(self.error(key, format!("must be a string, not {value}"))),
        }
    }

    /// A list of numbers, or `None` when absent or null.
    pub(crate) fn opt_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.present(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| self.error(key, format!("must hold numbers, not {v}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(value) => Err(self.error(key, format!("must be a list, not {value}"))),
        }
    }

    /// Refuses a flag this implementation does not support when the file sets it.
    pub(crate) fn refuse_if_true(&self, key: &str, why: &str) -> Result<()> {
        if self.bool(key, false)? {
            return Err(self.error(key, format!("= true is not supported: {why}")));
        }
        Ok(())
    }
}
