//! `scheduler_config.json` as read: the keys the file has, kept apart from the ones it
//! lacks, because each scheduler class fills absent keys with its own defaults.

use super::kind::SchedulerKind;
use crate::config_file::read_json;
use crate::error::{EngineError, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A diffusers scheduler config. Reading it decides nothing: `build` looks each key up
/// for the class it builds, exactly as `Class.from_config(file)` would.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Where the config came from, for error messages.
    origin: PathBuf,
    /// `_class_name`: the class the file was saved for (it may differ from the one built).
    class_name: Option<String>,
    /// The file's public keys (no `_`-prefixed ones), minus those listed in
    /// `_use_default_values`, which diffusers treats as absent.
    entries: Map<String, Value>,
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value: Value = read_json(path)?;
        Self::parse(value, path.to_path_buf())
    }

    /// Takes an already parsed config (a JSON object).
    pub fn from_json(value: Value) -> Result<Self> {
        Self::parse(value, PathBuf::from("scheduler_config.json (in memory)"))
    }

    fn parse(value: Value, origin: PathBuf) -> Result<Self> {
        let Value::Object(mut entries) = value else {
            return Err(EngineError::config(origin, "expected a JSON object"));
        };
        // diffusers records the keys it filled with defaults when it saved the file;
        // loading treats them as absent so that another class uses its own defaults.
        if let Some(defaults) = entries.remove("_use_default_values") {
            let Value::Array(names) = defaults else {
                return Err(EngineError::config(
                    origin,
                    "`_use_default_values` must be a list",
                ));
            };
            for name in names {
                if let Value::String(name) = name {
                    entries.remove(&name);
                }
            }
        }
        let class_name = match entries.remove("_class_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(other) => {
                return Err(EngineError::config(
                    origin,
                    format!("`_class_name` must be a string, not {other}"),
                ))
            }
        };
        entries.retain(|key, _| !key.starts_with('_'));
        Ok(SchedulerConfig {
            origin,
            class_name,
            entries,
        })
    }

    /// The scheduler kind of the file's `_class_name`, if it is one of the four.
    pub fn class_kind(&self) -> Option<SchedulerKind> {
        self.class_name
            .as_deref()
            .and_then(SchedulerKind::from_class_name)
    }

    /// The file's `_class_name`, whatever it names.
    pub fn class_name(&self) -> Option<&str> {
        self.class_name.as_deref()
    }

    /// The value of a key the file has (`None` when absent; JSON null is a value).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// Sets one key, as `Class.from_config(file, key=value)` does (e.g. a requested
    /// `timestep_spacing`).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.entries.insert(key.to_string(), value);
        self
    }

    /// Removes one key, so that the class default applies.
    pub fn without(mut self, key: &str) -> Self {
        self.entries.remove(key);
        self
    }

    /// Where the config came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn private_keys_and_defaulted_keys_count_as_absent() {
        let config = SchedulerConfig::from_json(json!({
            "_class_name": "DDIMScheduler",
            "_diffusers_version": "0.42.1",
            "_use_default_values": ["clip_sample"],
            "clip_sample": false,
            "steps_offset": 1,
        }))
        .unwrap();
        assert_eq!(config.class_kind(), Some(SchedulerKind::Ddim));
        assert_eq!(config.get("clip_sample"), None);
        assert_eq!(config.get("_diffusers_version"), None);
        assert_eq!(config.get("steps_offset"), Some(&json!(1)));
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        assert!(matches!(
            SchedulerConfig::from_json(json!([1, 2])),
            Err(EngineError::Config { .. })
        ));
        assert!(matches!(
            SchedulerConfig::from_json(json!({"_class_name": 3})),
            Err(EngineError::Config { .. })
        ));
    }

    #[test]
    fn unknown_class_names_have_no_kind() {
        let config =
            SchedulerConfig::from_json(json!({"_class_name": "LMSDiscreteScheduler"})).unwrap();
        assert_eq!(config.class_name(), Some("LMSDiscreteScheduler"));
        assert_eq!(config.class_kind(), None);
    }
}
