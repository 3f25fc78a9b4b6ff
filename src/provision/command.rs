//! The `command` provider: runs an operator-configured executable per call,
//! with one JSON request on stdin, and reads one JSON answer from stdout. The
//! generic way to plug in any cloud CLI (a shell script around `gcloud`,
//! `runpodctl`, `hcloud`, ...).
//!
//! Requests: `{"action":"create","request":{ProvisionRequest}}`,
//! `{"action":"describe","instance_id":"..."}`,
//! `{"action":"terminate","instance_id":"..."}`,
//! `{"action":"rekey","instance_id":"...","request":{RekeyRequest}}` (make
//! `ssh_public_key` the only authorized key, removing `previous_public_key`).
//! Answers to `create`, `describe` and `rekey`:
//! `{"instance_id":"...","host":"1.2.3.4","username":"root","ready":true}`.
//! A non-zero exit is a failure; its stderr (last line) becomes the error.
//!
//! The child gets a cleared environment plus `PATH`, `HOME`, `LANG`, `TMPDIR`
//! and the names in `provisioning.command_env`: the node's master key, JWT
//! secret and API keys never reach it. What it prints is read up to
//! [`MAX_OUTPUT`] bytes per stream.

use std::process::Stdio;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Instance, Provider, ProvisionRequest, RekeyRequest};
use crate::{Error, Result};

/// How long one invocation may take.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes read from the child's stdout and from its stderr.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Variables every child gets from the node's environment (when set).
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];

/// Runs `program args...` per call.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    program: String,
    args: Vec<String>,
    env: Vec<String>,
}

/// Reads `stream` to its end, keeping at most [`MAX_OUTPUT`] bytes (the rest
/// is drained so the child is not blocked on a full pipe).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl CommandProvider {
    /// A provider running `program` with `args`.
    pub fn new(program: String, args: Vec<String>) -> Self {
        Self {
            program,
            args,
            env: Vec::new(),
        }
    }

    /// Also pass these environment variables (by name) to the child.
    pub fn with_env(mut self, names: Vec<String>) -> Self {
        self.env = names;
        self
    }

    async fn call(&self, request: Value) -> Result<String> {
        let fail = |m: String| Error::Provider(format!("`{}`: {m}", self.program));
        let mut command = Command::new(&self.program);
        command.env_clear();
        for name in BASE_ENV
            .iter()
            .copied()
            .chain(self.env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(name) {
                command.env(name, v);
            }
        }
        let mut child = command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = request.to_string();
            match stdin.write_all(body.as_bytes()).await {
                // A program may exit without reading its input: its exit
                // status and stderr say more than the broken pipe.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(fail(format!("writing the request: {e}")));
                }
                _ => {}
            }
            // Dropping stdin closes it, so the program sees end of input.
        }
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let (out, err) = tokio::join!(read_capped(stdout), read_capped(stderr));
            let status = child.wait().await;
            (out, err, status)
        };
        let (stdout, stderr, status) = tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| fail(format!("no answer within {}s", TIMEOUT.as_secs())))?;
        let status = status.map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.chars().take(500).collect::<String>());
            return Err(fail(format!(
                "exited with {status}: {}",
                last.as_deref().unwrap_or("(no stderr)")
            )));
        }
        String::from_utf8(stdout).map_err(|_| fail("stdout is not UTF-8".into()))
    }

    async fn instance(&self, request: Value) -> Result<Instance> {
        let out = self.call(request).await?;
        serde_json::from_str(out.trim()).map_err(|e| {
            Error::Provider(format!(
                "`{}` answered something other than an instance JSON: {e}",
                self.program
            ))
        })
    }
}

impl Provider for CommandProvider {
    fn name(&self) -> &'static str {
        "command"
    }

    fn create<'a>(&'a self, req: &'a ProvisionRequest) -> BoxFuture<'a, Result<Instance>> {
        self.instance(json!({ "action": "create", "request": req }))
            .boxed()
    }

    fn describe<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Instance>> {
        self.instance(json!({ "action": "describe", "instance_id": instance_id }))
            .boxed()
    }

    fn terminate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            self.call(json!({ "action": "terminate", "instance_id": instance_id }))
                .await
                .map(|_| ())
        }
        .boxed()
    }

    fn rekey<'a>(
        &'a self,
        instance_id: &'a str,
        req: &'a RekeyRequest,
    ) -> BoxFuture<'a, Result<Instance>> {
        self.instance(json!({ "action": "rekey", "instance_id": instance_id, "request": req }))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, body: &str) -> String {
        let path = dir.join("provider.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        path.display().to_string()
    }

    fn request() -> ProvisionRequest {
        ProvisionRequest {
            token_id: "7".into(),
            tier: 1,
            vm_type: "gcp".into(),
            ssh_public_key: "ssh-ed25519 AAAA test".into(),
            label: "chainfront-vm-7".into(),
            expires_at: 1,
        }
    }

    #[tokio::test]
    async fn passes_the_request_on_stdin_and_reads_the_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Echo the label back as the instance id, proving stdin carried the request.
        let program = script(
            dir.path(),
            r#"label=$(cat | python3 -c 'import json,sys; print(json.load(sys.stdin)["request"]["label"])')
printf '{"instance_id":"%s","host":"10.0.0.7","ready":true}' "$label""#,
        );
        let p = CommandProvider::new("sh".into(), vec![program]);
        let i = p.create(&request()).await.expect("create");
        assert_eq!(i.instance_id, "chainfront-vm-7");
        assert_eq!(i.host.as_deref(), Some("10.0.0.7"));
        assert_eq!(i.username, "root");
        assert!(i.ready);
    }

    #[tokio::test]
    async fn a_failing_command_is_an_error_naming_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(dir.path(), "echo 'quota exceeded in region' >&2; exit 3");
        let p = CommandProvider::new("sh".into(), vec![program]);
        let err = p.create(&request()).await.expect_err("fails");
        assert!(err.to_string().contains("quota exceeded"), "{err}");
        let garbage = script(dir.path(), "echo not json");
        let p = CommandProvider::new("sh".into(), vec![garbage]);
        let err = p.describe("x").await.expect_err("fails");
        assert!(err.to_string().contains("instance JSON"), "{err}");
        let missing = CommandProvider::new("/nonexistent/provider".into(), vec![]);
        assert!(missing.terminate("x").await.is_err());
    }

    /// The child sees no secret from the node's environment, only the base
    /// variables and the ones named in `command_env`.
    #[tokio::test]
    async fn the_child_gets_a_cleared_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("env.txt");
        let program = script(
            dir.path(),
            &format!(
                "env > {}\nprintf '{{\"instance_id\":\"i\",\"ready\":true}}'",
                out.display()
            ),
        );
        // The test process's environment is full of CARGO_* variables: none
        // may reach the child.
        assert!(
            std::env::var_os("CARGO_PKG_NAME").is_some() || std::env::var_os("CARGO").is_some()
        );
        let p = CommandProvider::new("sh".into(), vec![program]).with_env(vec!["PWD".into()]);
        p.describe("i").await.expect("describe");
        let env = std::fs::read_to_string(&out).expect("env dump");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        for line in env.lines() {
            let name = line.split('=').next().unwrap_or_default();
            assert!(
                [
                    "PATH", "HOME", "LANG", "TMPDIR", "PWD", "SHLVL", "_", "OLDPWD"
                ]
                .contains(&name),
                "unexpected variable in the child: {name}"
            );
        }
        assert!(!env.contains("CARGO"), "{env}");
    }

    /// A re-key is one `rekey` request naming the instance, the new key and
    /// the key it replaces.
    #[tokio::test]
    async fn rekey_sends_the_new_and_the_previous_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seen = dir.path().join("req.json");
        let program = script(
            dir.path(),
            &format!(
                "cat > {}\nprintf '{{\"instance_id\":\"i-7\",\"host\":\"10.0.0.7\",\"ready\":true}}'",
                seen.display()
            ),
        );
        let p = CommandProvider::new("sh".into(), vec![program]);
        let req = RekeyRequest {
            token_id: "7".into(),
            label: "chainfront-vm-7".into(),
            ssh_public_key: "ssh-ed25519 NEW".into(),
            previous_public_key: Some("ssh-ed25519 OLD".into()),
        };
        let i = p.rekey("i-7", &req).await.expect("rekey");
        assert!(i.ready);
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(&seen).expect("request")).expect("json");
        assert_eq!(sent["action"], "rekey");
        assert_eq!(sent["instance_id"], "i-7");
        assert_eq!(sent["request"]["ssh_public_key"], "ssh-ed25519 NEW");
        assert_eq!(sent["request"]["previous_public_key"], "ssh-ed25519 OLD");
    }

    /// Output beyond the cap is read and dropped, not buffered: a provider
    /// printing megabytes cannot exhaust the node's memory.
    #[tokio::test]
    async fn output_is_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(
            dir.path(),
            "head -c 5000000 /dev/zero | tr '\\0' 'x' >&2; exit 1",
        );
        let p = CommandProvider::new("sh".into(), vec![program]);
        let err = p.describe("x").await.expect_err("fails").to_string();
        assert!(err.len() < 2_000, "{} bytes of error", err.len());
    }
}
