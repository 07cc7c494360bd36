//! Typed settings: code defaults, then a TOML file (`config/default.toml`), then `REFACT_*`
//! environment variables, then command-line flags; each layer overrides the one before.
//!
//! Environment variables map onto keys by lower-casing and splitting sections on `__`:
//! `REFACT_DATABASE_URL` → `database_url`, `REFACT_AUTH__ENABLED` → `auth.enabled`,
//! `REFACT_LIMITS__MAX_STEPS` → `limits.max_steps`. Variables that name no setting (such as
//! `REFACT_LOG`) are left to whoever reads them.

use crate::error::ApiError;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the service can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    pub bind: String,
    /// `postgres://...` or `sqlite://path` (the file is created if missing).
    pub database_url: Secret,
    /// `demo` (the built-in random-weight model), a diffusers folder, or a hub id.
    pub model: String,
    /// Where the demo model, downloaded models and cached layer statistics live.
    pub data_dir: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// UNet/VAE precision: `f32`, `f16`, `bf16` or `auto` (the text encoder is always f32).
    pub dtype: String,
    /// Decode images whose latent has a side above this many cells (64 = 512 px on SD)
    /// in bands of rows, to bound the VAE's memory; 0 = never. Banded images equal the
    /// whole decode to float rounding; the cost is time (docs/PERFORMANCE.md).
    pub vae_tile: usize,
    /// Folder of a CLIP model (transformers' CLIPModel layout) that scores the images of
    /// quality gates; empty: gates that ask for image metrics are refused.
    pub scorer: String,
    /// After SIGTERM: how long queued and running renders may still finish before they
    /// are stopped and answered 503 `shutting_down` (running edits go back to the
    /// queue at once).
    pub shutdown_grace_secs: f64,
    pub auth: AuthSettings,
    pub limits: Limits,
    pub batching: BatchingSettings,
    pub worker: WorkerSettings,
    pub statistics: StatisticsSettings,
    pub webhooks: WebhookSettings,
    /// How often this process writes its row in the replicas table (the operations
    /// view lists replicas seen within three such periods).
    pub replica_heartbeat_secs: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1:8080".into(),
            database_url: Secret::new("sqlite://./refact.db"),
            model: "demo".into(),
            data_dir: PathBuf::from("./data"),
            device: "auto".into(),
            dtype: "auto".into(),
            vae_tile: 0,
            scorer: String::new(),
            shutdown_grace_secs: 10.0,
            auth: AuthSettings::default(),
            limits: Limits::default(),
            batching: BatchingSettings::default(),
            worker: WorkerSettings::default(),
            statistics: StatisticsSettings::default(),
            webhooks: WebhookSettings::default(),
            replica_heartbeat_secs: 5.0,
        }
    }
}

/// Bearer-token authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// On unless a configuration says otherwise; when off, every caller acts as an admin.
    pub enabled: bool,
    /// Through a database outage, a token the database confirmed within this many
    /// seconds keeps its scopes (renders of loaded versions go on); 0 turns it off.
    pub outage_cache_secs: f64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: true,
            outage_cache_secs: 300.0,
        }
    }
}

/// Request limits; anything beyond them is refused with 413 or 422.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Longest prompt (any text field of a request) in characters.
    pub max_prompt_chars: usize,
    /// Largest image width and height in pixels (multiples of 8).
    pub max_width: usize,
    pub max_height: usize,
    /// Most denoising steps per image.
    pub max_steps: usize,
    /// Largest classifier-free guidance scale.
    pub max_guidance_scale: f64,
    /// Largest cost of one image, width × height × steps in millions ("megapixel-steps").
    /// Each limit above alone still allows 1024×1024 at 150 steps, minutes of the one
    /// render thread; this bounds what a single request may hold it for.
    pub max_megapixel_steps: f64,
    /// Generation requests waiting for the model; more are refused with 503.
    pub generate_queue: usize,
    /// Largest page of a list endpoint.
    pub max_page_size: i64,
    /// Longest a request may take before the server gives up with 503.
    pub request_timeout_secs: u64,
    /// Longest a client may take to send a request's headers before the connection is
    /// closed (a client trickling a partial header line would otherwise hold it for ever).
    pub header_read_timeout_secs: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_prompt_chars: 1000,
            max_width: 1024,
            max_height: 1024,
            max_steps: 150,
            max_guidance_scale: 50.0,
            // 768×768 at 50 steps (29.5), 512×512 at 100 (26.2), 1024×1024 at 25 (26.2).
            max_megapixel_steps: 30.0,
            generate_queue: 16,
            max_page_size: 200,
            request_timeout_secs: 600,
            header_read_timeout_secs: 10.0,
        }
    }
}

/// Dynamic batching of image requests (see `generation`): requests that share size,
/// steps, scheduler and guidance on/off render together, whatever their versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingSettings {
    /// Images per batch at most; 1 turns batching off.
    pub max_batch: usize,
    /// How long the oldest request waits for others to join its batch, in milliseconds.
    /// It waits only while requests overlap (the last batch had company, or it queued
    /// behind a render) or for the other images of its own request; a lone request on an
    /// idle server starts at once.
    pub max_wait_ms: f64,
    /// (version, prompt) text-encoder outputs kept for the next image; 0 turns the
    /// cache off.
    pub text_cache_prompts: usize,
}

impl Default for BatchingSettings {
    fn default() -> Self {
        BatchingSettings {
            max_batch: 8,
            max_wait_ms: 5.0,
            text_cache_prompts: refact_engine::pipeline::text_cache::DEFAULT_CAPACITY,
        }
    }
}

impl BatchingSettings {
    /// As the generation thread takes it.
    pub fn policy(&self) -> crate::generation::BatchPolicy {
        crate::generation::BatchPolicy {
            max_batch: self.max_batch,
            max_wait: Duration::from_secs_f64(self.max_wait_ms / 1000.0),
        }
    }
}

/// The edit worker: lease, heartbeat and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run the edit worker in this process (API-only replicas turn it off).
    pub enabled: bool,
    /// How long a claimed edit stays ours without a heartbeat: after a crash, another
    /// replica takes the edit over this long after the last heartbeat.
    pub lease_secs: f64,
    /// How often the lease is renewed while an edit runs.
    pub heartbeat_secs: f64,
    /// How often an idle worker looks for work when nothing wakes it.
    pub poll_interval_secs: f64,
    /// Attempts per edit before it fails. A transient error or a crash (a lapsed
    /// lease) uses one; a shutdown, a moved head or a wait for a turn does not.
    pub max_attempts: i32,
    /// Head moves an edit recomputes after before it asks for the head's next turn
    /// (then no younger edit commits until it has; see `Store::request_turn`).
    #[serde(alias = "max_head_retries")]
    pub head_moves_before_turn: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            enabled: true,
            lease_secs: 10.0,
            heartbeat_secs: 2.0,
            poll_interval_secs: 1.0,
            max_attempts: 3,
            head_moves_before_turn: 1,
        }
    }
}

impl WorkerSettings {
    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }

    /// The heartbeat period as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    /// The idle poll period as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_secs)
    }
}

/// Webhooks: receivers of `edit.applied`, `edit.failed` and `alias.moved`, signed
/// with HMAC-SHA256 (GitHub's `X-Hub-Signature-256` scheme) and retried with backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to send events (`[[webhooks.receivers]]` in the TOML file).
    pub receivers: Vec<WebhookReceiver>,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each attempt.
    pub first_retry_secs: f64,
    /// The longest wait between attempts.
    pub max_retry_secs: f64,
    /// How long a receiver may take to answer.
    pub timeout_secs: f64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            receivers: Vec::new(),
            max_attempts: 8,
            first_retry_secs: 2.0,
            max_retry_secs: 600.0,
            timeout_secs: 10.0,
        }
    }
}

/// One webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC key; the receiver checks `X-Hub-Signature-256` with it.
    pub secret: Secret,
    /// Which events to send; empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookSettings {
    /// The wait after failed attempt number `attempt` (1-based): doubling from
    /// `first_retry_secs`, at most `max_retry_secs`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((self.first_retry_secs * factor).min(self.max_retry_secs))
    }

    /// The URLs that receive `event`.
    pub fn receivers_of(&self, event: &str) -> Vec<String> {
        self.receivers
            .iter()
            .filter(|r| r.events.is_empty() || r.events.iter().any(|e| e == event))
            .map(|r| r.url.clone())
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        for receiver in &self.receivers {
            if !(receiver.url.starts_with("http://") || receiver.url.starts_with("https://")) {
                return Err(format!(
                    "webhook url {:?} must start with http:// or https://",
                    receiver.url
                ));
            }
            if receiver.secret.expose().is_empty() {
                return Err(format!("webhook {} needs a secret", receiver.url));
            }
            if let Some(unknown) = receiver
                .events
                .iter()
                .find(|e| !crate::webhooks::EVENTS.contains(&e.as_str()))
            {
                return Err(format!(
                    "webhook {}: unknown event {unknown:?} (known: {})",
                    receiver.url,
                    crate::webhooks::EVENTS.join(", ")
                ));
            }
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if self.max_attempts == 0
            || !positive(self.first_retry_secs)
            || !positive(self.max_retry_secs)
            || !positive(self.timeout_secs)
        {
            return Err("webhooks.max_attempts and the webhook durations must be positive".into());
        }
        Ok(())
    }
}

/// The caption corpus behind ReFACT's layer statistics (DESIGN.md §1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatisticsSettings {
    /// `builtin` (the COCO captions shipped with the engine) or a text file with one
    /// caption per line.
    pub corpus: String,
    /// How many captions of the corpus to use.
    pub lines: usize,
}

impl Default for StatisticsSettings {
    fn default() -> Self {
        StatisticsSettings {
            corpus: "builtin".into(),
            lines: 25_000,
        }
    }
}

impl Settings {
    /// Reads the layers below the command line: code defaults, the TOML file (if given),
    /// then the `REFACT_*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ApiError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ApiError::Settings(format!("cannot read {}: {e}", path.display())))?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ApiError::Settings(format!("{}: {e}", path.display())))?;
        }
        let schema = toml::Table::try_from(Settings::default())
            .map_err(|e| ApiError::Settings(format!("settings schema: {e}")))?;
        for (name, value) in env {
            apply_env_var(&mut table, &schema, &name, &value)?;
        }
        let settings: Settings = table
            .try_into()
            .map_err(|e| ApiError::Settings(format!("invalid settings: {e}")))?;
        settings.check()?;
        Ok(settings)
    }

    /// The configuration file to read when none is named: `config/default.toml` under the
    /// working directory, if it exists.
    pub fn default_file() -> Option<PathBuf> {
        let path = PathBuf::from("config/default.toml");
        path.is_file().then_some(path)
    }

    /// Refuses settings that cannot work, before anything starts.
    pub fn check(&self) -> Result<(), ApiError> {
        let bad = |msg: &str| Err(ApiError::Settings(msg.to_string()));
        if self.limits.max_body_bytes == 0 || self.limits.generate_queue == 0 {
            return bad("limits.max_body_bytes and limits.generate_queue must be positive");
        }
        if self.limits.max_page_size < 1 {
            return bad("limits.max_page_size must be at least 1");
        }
        let batching = &self.batching;
        if !(1..=64).contains(&batching.max_batch) {
            return bad("batching.max_batch must be between 1 and 64");
        }
        if !(batching.max_wait_ms.is_finite() && (0.0..=1000.0).contains(&batching.max_wait_ms)) {
            return bad("batching.max_wait_ms must be between 0 and 1000");
        }
        if batching.text_cache_prompts > 100_000 {
            return bad("batching.text_cache_prompts must be at most 100000");
        }
        let cache = self.auth.outage_cache_secs;
        if !(cache.is_finite() && (0.0..=86_400.0).contains(&cache)) {
            return bad("auth.outage_cache_secs must be between 0 and 86400 seconds");
        }
        let grace = self.shutdown_grace_secs;
        if !(grace.is_finite() && (0.0..=3600.0).contains(&grace)) {
            return bad("shutdown_grace_secs must be between 0 and 3600 seconds");
        }
        let header = self.limits.header_read_timeout_secs;
        if !(header.is_finite() && header > 0.0 && header <= 3600.0) {
            return bad("limits.header_read_timeout_secs must be between 0 and 3600 seconds");
        }
        self.webhooks.check().map_err(ApiError::Settings)?;
        let beat = self.replica_heartbeat_secs;
        if !(beat.is_finite() && beat > 0.0 && beat <= 3600.0) {
            return bad("replica_heartbeat_secs must be between 0 and 3600 seconds");
        }
        let cost = self.limits.max_megapixel_steps;
        if !(cost.is_finite() && cost > 0.0) {
            return bad("limits.max_megapixel_steps must be positive");
        }
        let w = &self.worker;
        if !(w.lease_secs > 0.0 && w.heartbeat_secs > 0.0 && w.poll_interval_secs > 0.0) {
            return bad(
                "worker.lease_secs, heartbeat_secs and poll_interval_secs must be positive",
            );
        }
        if w.heartbeat_secs >= w.lease_secs {
            return bad("worker.heartbeat_secs must be shorter than worker.lease_secs");
        }
        if self.statistics.lines == 0 {
            return bad("statistics.lines must be at least 1");
        }
        if w.max_attempts < 1 {
            return bad("worker.max_attempts must be at least 1");
        }
        Ok(())
    }
}

/// Sets the key that `REFACT_<NAME>` designates, parsing the text as the type the key has
/// in the defaults. Names that are not settings are ignored.
fn apply_env_var(
    table: &mut toml::Table,
    schema: &toml::Table,
    name: &str,
    text: &str,
) -> Result<(), ApiError> {
    let Some(rest) = name.strip_prefix("REFACT_") else {
        return Ok(());
    };
    let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let Some(expected) = lookup(schema, &path) else {
        return Ok(());
    };
    let value = parse_as(expected, text).ok_or_else(|| {
        ApiError::Settings(format!(
            "{name}: `{text}` is not a valid {}",
            expected.type_str()
        ))
    })?;
    let (last, sections) = path.split_last().expect("split yields at least one part");
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ApiError::Settings(format!("{name}: `{section}` is not a section")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        // A whole section cannot be set from one variable.
        (!value.is_table()).then_some(value)
    } else {
        lookup(value.as_table()?, rest)
    }
}

fn parse_as(expected: &toml::Value, text: &str) -> Option<toml::Value> {
    let text = text.trim();
    Some(match expected {
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return None,
        }),
        toml::Value::Integer(_) => toml::Value::Integer(text.parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(text.parse().ok()?),
        _ => toml::Value::String(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn code_defaults_keep_auth_on() {
        let settings = Settings::load(None, env(&[])).unwrap();
        assert!(settings.auth.enabled);
        assert_eq!(settings.model, "demo");
        assert_eq!(settings.database_url.expose(), "sqlite://./refact.db");
    }

    #[test]
    fn env_overrides_file_and_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "bind = \"0.0.0.0:1\"\nmodel = \"from-file\"\n[auth]\nenabled = false\n[limits]\nmax_steps = 7\n",
        )
        .unwrap();
        let settings = Settings::load(
            Some(&file),
            env(&[
                ("REFACT_MODEL", "from-env"),
                ("REFACT_AUTH__ENABLED", "true"),
                ("REFACT_WORKER__LEASE_SECS", "12.5"),
                ("REFACT_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.bind, "0.0.0.0:1");
        assert_eq!(settings.model, "from-env");
        assert!(settings.auth.enabled);
        assert_eq!(settings.limits.max_steps, 7);
        assert_eq!(settings.worker.lease_secs, 12.5);
    }

    #[test]
    fn a_badly_typed_env_var_is_an_error_naming_it() {
        let err = Settings::load(None, env(&[("REFACT_LIMITS__MAX_STEPS", "many")])).unwrap_err();
        assert!(
            err.to_string().contains("REFACT_LIMITS__MAX_STEPS"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[auth]\nenabeld = false\n").unwrap();
        assert!(Settings::load(Some(&file), env(&[])).is_err());
    }

    #[test]
    fn heartbeat_must_be_shorter_than_the_lease() {
        let vars = env(&[
            ("REFACT_WORKER__LEASE_SECS", "1"),
            ("REFACT_WORKER__HEARTBEAT_SECS", "2"),
        ]);
        assert!(Settings::load(None, vars).is_err());
    }

    #[test]
    fn the_shipped_configuration_is_valid_and_spells_out_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
        let loaded = Settings::load(Some(&file), env(&[])).unwrap();
        assert!(loaded.webhooks.receivers.is_empty());
        assert_eq!(
            toml::Table::try_from(&loaded.webhooks).unwrap(),
            toml::Table::try_from(WebhookSettings::default()).unwrap()
        );
        assert_eq!(
            loaded.replica_heartbeat_secs,
            Settings::default().replica_heartbeat_secs
        );
    }

    #[test]
    fn webhook_receivers_are_checked_and_retries_double() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hooks.toml");
        let write = |body: &str| std::fs::write(&file, body).unwrap();
        write("[[webhooks.receivers]]\nurl = \"https://ci.test/hook\"\nsecret = \"s\"\nevents = [\"alias.moved\"]\n");
        let settings = Settings::load(Some(&file), env(&[])).unwrap();
        assert_eq!(
            settings.webhooks.receivers_of("alias.moved"),
            ["https://ci.test/hook"]
        );
        assert!(settings.webhooks.receivers_of("edit.applied").is_empty());
        for bad in [
            "url = \"ftp://x\"\nsecret = \"s\"",
            "url = \"https://x\"\nsecret = \"\"",
            "url = \"https://x\"\nsecret = \"s\"\nevents = [\"edit.done\"]",
        ] {
            write(&format!("[[webhooks.receivers]]\n{bad}\n"));
            assert!(Settings::load(Some(&file), env(&[])).is_err(), "{bad}");
        }
        let waits: Vec<f64> = (1..=4)
            .map(|n| settings.webhooks.backoff(n).as_secs_f64())
            .collect();
        assert_eq!(waits, [2.0, 4.0, 8.0, 16.0]);
        assert_eq!(settings.webhooks.backoff(30).as_secs_f64(), 600.0, "capped");
    }
}
