//! The few API calls `refact push` makes, with the server's error bodies turned into
//! readable errors.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A client for one server and token.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What `POST /edits` answered.
pub enum Submitted {
    /// A new edit was queued (202).
    Created(Value),
    /// The same fact was pushed before: that edit (200).
    Existing(Value),
}

/// A refusal with the API's error shape.
#[derive(Debug)]
pub struct ApiRefusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiRefusal {}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok((status, value));
        }
        let error = &value["error"];
        Err(anyhow!(ApiRefusal {
            status,
            code: error["code"].as_str().unwrap_or("unknown").to_string(),
            message: match (error["message"].as_str(), error["field"].as_str()) {
                (Some(message), Some(field)) => format!("{message} (field `{field}`)"),
                (Some(message), None) => message.to_string(),
                (None, _) => value.to_string(),
            },
        })
        .context(format!("{method} {path}")))
    }

    /// `POST /edits` with an idempotency key.
    pub async fn submit(&self, body: &Value, key: &str) -> anyhow::Result<Submitted> {
        let (status, edit) = self
            .send(Method::POST, "/edits", Some(body), Some(key))
            .await?;
        Ok(if status == StatusCode::ACCEPTED {
            Submitted::Created(edit)
        } else {
            Submitted::Existing(edit)
        })
    }

    /// `GET /edits/{id}`.
    pub async fn edit(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(Method::GET, &format!("/edits/{id}"), None, None)
            .await?
            .1)
    }

    /// `GET /versions/{n}`.
    pub async fn version(&self, number: i64) -> anyhow::Result<Value> {
        Ok(self
            .send(Method::GET, &format!("/versions/{number}"), None, None)
            .await?
            .1)
    }

    /// `PUT /aliases/{name}` (never forced: a failed gate must stop a pipeline).
    pub async fn set_alias(&self, name: &str, version: i64) -> anyhow::Result<Value> {
        let body = json!({ "version": version });
        Ok(self
            .send(Method::PUT, &format!("/aliases/{name}"), Some(&body), None)
            .await?
            .1)
    }
}
