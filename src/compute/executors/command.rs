//! `command`: a service run by an operator program, with the provisioning
//! `command` provider's contract: one JSON request on stdin
//! (`{"service", "jobId", "wallet", "payload"}`), one JSON answer on stdout
//! (`{"result": …, "units": <number>}`); a non-zero exit is a failure whose
//! last stderr line becomes the job's error. How `trade`, `gpu` and `ml` are
//! offered.

use std::process::Stdio;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command as Process;

use crate::compute::executor::{Bound, Executor, Failure, JobContext, Output, Refusal};

/// One run's time cap.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Largest answer read.
const MAX_OUTPUT: usize = 1 << 20;

/// A service backed by a program.
pub struct CommandService {
    service: String,
    program: String,
    args: Vec<String>,
}

impl CommandService {
    /// `argv[0]` runs with the rest as arguments.
    pub fn new(service: &str, argv: &[String]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self {
            service: service.to_owned(),
            program: program.clone(),
            args: args.to_vec(),
        })
    }
}

impl Executor for CommandService {
    fn check(&self, _payload: &Value) -> Result<Bound, Refusal> {
        Ok(None)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let fail = |m: String| Failure::new(format!("`{}` service: {m}", self.service));
            let mut child = Process::new(&self.program)
                .args(&self.args)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|_| fail("the service program could not be started".into()))?;
            if let Some(mut stdin) = child.stdin.take() {
                let req = json!({
                    "service": self.service,
                    "jobId": ctx.job_id,
                    "wallet": chainfront_indexer::keys::lower(ctx.wallet),
                    "payload": payload,
                });
                let _ = stdin.write_all(req.to_string().as_bytes()).await;
            }
            let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
                .await
                .map_err(|_| fail(format!("no answer within {} s", TIMEOUT.as_secs())))?
                .map_err(|e| fail(e.to_string()))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("(no stderr)");
                return Err(fail(format!(
                    "exited with {}: {}",
                    out.status,
                    last.chars().take(500).collect::<String>()
                )));
            }
            if out.stdout.len() > MAX_OUTPUT {
                return Err(fail("answer larger than 1 MB".into()));
            }
            let answer: Value = serde_json::from_slice(&out.stdout)
                .map_err(|_| fail("answered something other than a JSON object".into()))?;
            let units = match answer.get("units") {
                None | Some(Value::Null) => Decimal::ONE,
                Some(v) => v
                    .to_string()
                    .parse::<Decimal>()
                    .ok()
                    .filter(|d| !d.is_sign_negative())
                    .ok_or_else(|| fail("`units` must be a non-negative number".into()))?,
            };
            Ok(Output {
                result: answer.get("result").cloned().unwrap_or(Value::Null),
                units,
            })
        }
        .boxed()
    }
}
