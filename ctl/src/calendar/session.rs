//! A person's session with the public API: where it is, who signed in and
//! their tokens, kept in a file readable by its owner only; JSON calls
//! that renew the access token once when it has expired.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// What `agendactl login` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// The public base URL (the VIP, or the gateway).
    pub url: String,
    /// The CA that signed the gateway's certificate (https only).
    pub ca: Option<PathBuf>,
    /// Who signed in.
    pub username: String,
    /// The person's time zone when they signed in (agendas are shown in it).
    pub time_zone: String,
    /// The current access token (renewed when it expires).
    pub access_token: String,
    /// The refresh token it is renewed with.
    pub refresh_token: String,
}

/// A signed-in client of the API.
pub struct Session {
    path: PathBuf,
    saved: Saved,
    http: reqwest::Client,
}

/// Where a session lives unless `--session` says: the user's config dir.
pub fn default_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/agenda/session.json")
}

fn client(url: &str, ca: Option<&Path>) -> Result<reqwest::Client> {
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let ca = ca.ok_or_else(|| {
            Error::Refused(format!(
                "{url} is https: give the CA that signed it with --ca (a deployment's .agenda/ca.pem)"
            ))
        })?;
        let tls = agenda_common::tls::public_client_config(ca)
            .map_err(|e| Error::Refused(format!("{}: {e}", ca.display())))?;
        http = http.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
    }
    http.build()
        .map_err(|e| Error::Refused(format!("an HTTP client: {e}")))
}

/// One call: the status and the JSON body (Null when empty).
async fn send(
    http: &reqwest::Client,
    url: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut req = http.request(method.clone(), format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let what = format!("{method} {url}{path}");
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Refused(format!("{what}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| Error::Refused(format!("{what}: {e}")))?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|_| Error::Malformed(format!("{what}: the answer is not JSON: {text:.200}")))?
    };
    Ok((status, body))
}

/// The API's refusal in its own words (`error.message`, and the field).
fn refusal(what: &str, status: u16, body: &Value) -> Error {
    let message = body["error"]["message"].as_str().unwrap_or("no message");
    let field = body["error"]["details"]["field"]
        .as_str()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    Error::Refused(format!("{what}: {status}: {message}{field}"))
}

impl Session {
    /// Signs `username` in at `url` and keeps the session at `path`.
    pub async fn login(
        path: &Path,
        url: &str,
        ca: Option<PathBuf>,
        username: &str,
        password: &str,
    ) -> Result<Session> {
        let url = url.trim_end_matches('/').to_string();
        let http = client(&url, ca.as_deref())?;
        let body = json!({"username": username, "password": password});
        let (st, reply) = send(
            &http,
            &url,
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&body),
        )
        .await?;
        if st != 200 {
            return Err(refusal("signing in", st, &reply));
        }
        let access = reply["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (st, me) = send(&http, &url, Method::GET, "/v1/me", Some(&access), None).await?;
        if st != 200 {
            return Err(refusal("reading your profile", st, &me));
        }
        let saved = Saved {
            url,
            ca,
            username: me["username"].as_str().unwrap_or(username).to_string(),
            time_zone: me["time_zone"].as_str().unwrap_or("UTC").to_string(),
            access_token: access,
            refresh_token: reply["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let session = Session {
            path: path.to_path_buf(),
            saved,
            http,
        };
        session.save()?;
        Ok(session)
    }

    /// The session kept at `path` by `agendactl login`.
    pub fn open(path: &Path) -> Result<Session> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Refused(format!(
                "no session at {} ({e}): sign in first with `agendactl login NAME`",
                path.display()
            ))
        })?;
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| Error::Malformed(format!("{}: {e}", path.display())))?;
        let http = client(&saved.url, saved.ca.as_deref())?;
        Ok(Session {
            path: path.to_path_buf(),
            saved,
            http,
        })
    }

    /// Who is signed in, where, in which zone.
    pub fn saved(&self) -> &Saved {
        &self.saved
    }

    fn save(&self) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let what = format!("writing {}", self.path.display());
        let tmp = self.path.with_extension("tmp");
        // The tokens are the person's: readable by the owner only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(what.clone()))?;
        let text = serde_json::to_vec_pretty(&self.saved)
            .map_err(|e| Error::Malformed(format!("{what}: {e}")))?;
        f.write_all(&text).map_err(Error::io(what.clone()))?;
        std::fs::rename(&tmp, &self.path).map_err(Error::io(what))
    }

    /// Forgets the session (its refresh token is revoked first).
    pub async fn logout(self) -> Result<()> {
        let body = json!({"refresh_token": self.saved.refresh_token});
        let (st, reply) = send(
            &self.http,
            &self.saved.url,
            Method::POST,
            "/v1/auth/logout",
            Some(&self.saved.access_token),
            Some(&body),
        )
        .await?;
        if !(200..300).contains(&st) && st != 401 {
            return Err(refusal("signing out", st, &reply));
        }
        std::fs::remove_file(&self.path)
            .map_err(Error::io(format!("removing {}", self.path.display())))
    }

    /// `method path` with the session's token; an expired token is renewed
    /// once with the refresh token (and kept). A refusal is an error with
    /// the API's message; `what` names the call in it.
    pub async fn call(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut answer = self.send(method.clone(), path, body.as_ref()).await?;
        if answer.0 == 401 {
            self.renew().await?;
            answer = self.send(method, path, body.as_ref()).await?;
        }
        match answer {
            (st, reply) if (200..300).contains(&st) => Ok(reply),
            (st, reply) => Err(refusal(what, st, &reply)),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let token = Some(self.saved.access_token.as_str());
        send(&self.http, &self.saved.url, method, path, token, body).await
    }

    async fn renew(&mut self) -> Result<()> {
        let body = json!({"refresh_token": self.saved.refresh_token});
        let (st, reply) = send(
            &self.http,
            &self.saved.url,
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&body),
        )
        .await?;
        if st != 200 {
            return Err(Error::Refused(format!(
                "your session has ended ({}): sign in again with `agendactl login {}`",
                reply["error"]["message"].as_str().unwrap_or("refused"),
                self.saved.username
            )));
        }
        self.saved.access_token = reply["access_token"].as_str().unwrap_or_default().into();
        if let Some(r) = reply["refresh_token"].as_str() {
            self.saved.refresh_token = r.into();
        }
        self.save()
    }
}
