//! Helpers for the simulator tests: a spawned simulator with a Google token (fetched through
//! the real `gcp_auth` code path) and an Auth0 Management API token, and small HTTP helpers.

use std::path::{Path, PathBuf};

use gcp_auth::TokenProvider;
use reqwest::Method;
use runwarden::sim::{RunningSim, World, spawn};
use serde_json::Value;

pub struct Env {
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub google_token: String,
    pub key_file: PathBuf,
    pub _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub use crate::common::demo_world_path;

pub fn world(yaml: &str) -> World {
    World::from_yaml(yaml, Path::new("test.yaml")).expect("test world parses")
}

pub async fn demo() -> Env {
    start(World::from_file(&demo_world_path()).expect("demo world loads")).await
}

pub async fn start(world: World) -> Env {
    let sim = spawn(world).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = sim.write_credentials(dir.path()).expect("key file written");
    let provider =
        gcp_auth::CustomServiceAccount::from_file(&key_file).expect("gcp_auth reads the key file");
    let token = provider
        .token(&["https://www.googleapis.com/auth/cloud-platform"])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "gcp_auth gets a token from the simulator: {e:?}; requests: {:?}",
                sim.handle.request_log()
            )
        });
    Env {
        sim,
        http: reqwest::Client::new(),
        google_token: token.as_str().to_string(),
        key_file,
        _dir: dir,
    }
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url, path)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request reaches the simulator");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    /// A Google API call with the Google token.
    pub async fn google(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let token = self.google_token.clone();
        self.raw(method, path, Some(&token), body).await
    }

    pub async fn gget(&self, path: &str) -> Resp {
        self.google(Method::GET, path, None).await
    }

    pub async fn gpost(&self, path: &str, body: &Value) -> Resp {
        self.google(Method::POST, path, Some(body)).await
    }

    /// Fetches a Management API token with the client credentials grant.
    pub async fn management_token(&self) -> String {
        let (id, secret) = self.sim.auth0_client();
        let audience = format!("https://{}/api/v2/", self.sim.handle.auth0_domain());
        let body = serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret, "audience": audience});
        let r = self
            .raw(Method::POST, "/oauth/token", None, Some(&body))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A Management API GET with a fresh token.
    pub async fn aget(&self, path: &str) -> Resp {
        let token = self.management_token().await;
        self.raw(Method::GET, path, Some(&token), None).await
    }
}

/// Asserts a Google error body: `{"error":{"code","message","status"}}`.
#[track_caller]
pub fn assert_google_error(r: &Resp, code: u16, status: &str) {
    assert_eq!(r.status, code, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert_eq!(r.body["error"]["status"], status, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
}

/// Asserts an Auth0 error body: `{statusCode, error, message}`.
#[track_caller]
pub fn assert_auth0_error(r: &Resp, code: u16) {
    assert_eq!(r.status, code, "{}", r.body);
    assert_eq!(r.body["statusCode"], code, "{}", r.body);
    assert!(
        r.body["error"].is_string() && r.body["message"].is_string(),
        "{}",
        r.body
    );
}

/// Property names of a schema in a Google discovery document under `../shared/reference`, or
/// None (with a notice) when the reference documents are not beside the checkout.
pub fn google_schema(doc: &str, schema: &str) -> Option<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/google")
        .join(doc);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "notice: {} is absent; skipping the field-name check",
            path.display()
        );
        return None;
    };
    let d: Value = serde_json::from_str(&text).expect("discovery document is JSON");
    let props = d["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{schema} in {doc}"));
    Some(props.keys().cloned().collect())
}

/// Property names of a schema in the Auth0 OpenAPI document (a text scan of its
/// `components.schemas` block), or None with a notice when absent.
pub fn auth0_schema(schema: &str) -> Option<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/auth0/management-api-v2.openapi.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "notice: {} is absent; skipping the field-name check",
            path.display()
        );
        return None;
    };
    let header = format!("    {schema}:");
    let mut lines = text.lines().skip_while(|l| *l != header).skip(1);
    let mut props = Vec::new();
    let mut in_props = false;
    for line in lines.by_ref() {
        if line.starts_with("    ") && !line.starts_with("     ") {
            break; // the next schema
        }
        if line == "      properties:" {
            in_props = true;
            continue;
        }
        if in_props {
            if line.starts_with("      ") && !line.starts_with("       ") {
                in_props = false;
                continue;
            }
            if let Some(name) = line
                .strip_prefix("        ")
                .filter(|l| !l.starts_with(' '))
            {
                props.push(name.trim_end_matches(':').trim_matches('"').to_string());
            }
        }
    }
    assert!(
        !props.is_empty(),
        "schema {schema} not found in the Auth0 reference"
    );
    Some(props)
}

/// Asserts every key of `object` is a property of the reference schema.
#[track_caller]
pub fn assert_fields_in(object: &Value, allowed: &[String], what: &str) {
    let obj = object
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {object}"));
    for key in obj.keys() {
        assert!(
            allowed.iter().any(|a| a == key),
            "{what}: field {key:?} is not in the reference ({allowed:?})"
        );
    }
}
