//! The `command` provider: runs an operator-configured executable per call,
//! with one JSON request on stdin, and reads one JSON answer from stdout. The
//! generic way to plug in any cloud CLI (a shell script around `gcloud`,
//! `runpodctl`, `hcloud`, ...).
//!
//! Requests: `{"action":"create","request":{ProvisionRequest}}`,
//! `{"action":"describe","instance_id":"..."}`,
//! `{"action":"terminate","instance_id":"..."}`. Answers to `create` and
//! `describe`: `{"instance_id":"...","host":"1.2.3.4","username":"root","ready":true}`.
//! A non-zero exit is a failure; its stderr (last line) becomes the error.

use std::process::Stdio;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Instance, Provider, ProvisionRequest};
use crate::{Error, Result};

/// How long one invocation may take.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `program args...` per call.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    program: String,
    args: Vec<String>,
}

impl CommandProvider {
    /// A provider running `program` with `args`.
    pub fn new(program: String, args: Vec<String>) -> Self {
        Self { program, args }
    }

    async fn call(&self, request: Value) -> Result<String> {
        let fail = |m: String| Error::Provider(format!("`{}`: {m}", self.program));
        let mut child = Command::new(&self.program)
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
        let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("no answer within {}s", TIMEOUT.as_secs())))?
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(fail(format!(
                "exited with {}: {}",
                out.status,
                last.unwrap_or("(no stderr)")
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| fail("stdout is not UTF-8".into()))
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
}
