//! `code`: python, javascript and bash in a bubblewrap sandbox. The child
//! sees a read-only system (`/usr`, `/bin`, `/lib*`, `/etc`), a private
//! `/proc` and `/dev`, and one writable directory, `/work`, that holds the
//! program and is deleted afterwards; it has no network (its own empty
//! network namespace), no view of other processes, a cleared environment.
//! When the node runs as root the child runs as an unprivileged uid, so the
//! process cap (`RLIMIT_NPROC`) stops fork bombs; `prlimit` caps memory
//! (address space), CPU time, file size and open files; the node kills it at
//! the time cap and keeps at most `max_output_bytes` of stdout and stderr.
//! A language whose interpreter is not installed answers 501. Priced per
//! second of wall time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::compute::config::CodeConfig;
use crate::compute::executor::{
    Bound, Executor, Failure, JobContext, Output, Refusal, str_field, u64_field,
};

/// Languages of the document this node never runs.
const UNSUPPORTED: [&str; 3] = ["typescript", "rust", "go"];
/// Source and stdin at most.
const MAX_SOURCE: usize = 64 * 1024;
/// Default run time cap, ms.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default memory cap, MB.
const DEFAULT_MEMORY_MB: u64 = 256;
/// V8 reserves address space far beyond its heap: javascript gets this much
/// address space at least (its heap is capped at the requested memory).
const NODE_MIN_AS_MB: u64 = 1_024;

/// The code service.
pub struct Code {
    cfg: CodeConfig,
    bwrap: PathBuf,
    /// Language → interpreter found at start.
    interpreters: Vec<(String, PathBuf)>,
    as_root: bool,
}

/// Finds a program: an absolute path as is, else in the system directories
/// first (what the sandbox mounts), then on `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

impl Code {
    /// Probes bubblewrap and the interpreters. `None` (with the reason) when
    /// the service cannot run here.
    pub fn new(cfg: CodeConfig) -> Result<Self, String> {
        if !cfg.enabled {
            return Err("the `code` service is switched off on this node".into());
        }
        let bwrap = find(&cfg.bwrap).ok_or_else(|| {
            "the `code` service needs bubblewrap (`bwrap`), which is not installed on this node"
                .to_owned()
        })?;
        let interpreters = cfg
            .interpreters
            .iter()
            .filter_map(|(lang, prog)| find(prog).map(|p| (lang.clone(), p)))
            .collect();
        let as_root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| m.uid() == 0)
                .unwrap_or(false)
        };
        Ok(Self {
            cfg,
            bwrap,
            interpreters,
            as_root,
        })
    }

    fn interpreter(&self, lang: &str) -> Option<&PathBuf> {
        self.interpreters
            .iter()
            .find(|(l, _)| l == lang)
            .map(|(_, p)| p)
    }
}

struct Request<'a> {
    language: &'a str,
    code: &'a str,
    stdin: &'a str,
    timeout_ms: u64,
    memory_mb: u64,
}

impl Code {
    fn parse<'a>(&self, payload: &'a Value) -> Result<Request<'a>, Refusal> {
        let language = str_field(payload, "language")?
            .ok_or_else(|| Refusal::Invalid("payload.language is required".into()))?;
        if UNSUPPORTED.contains(&language) {
            return Err(Refusal::NotOffered(format!(
                "language `{language}` is not offered: its toolchain is not installed on this node"
            )));
        }
        if !self.cfg.interpreters.contains_key(language) {
            return Err(Refusal::Invalid(format!(
                "payload.language must be one of {}",
                self.cfg
                    .interpreters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.interpreter(language).is_none() {
            return Err(Refusal::NotOffered(format!(
                "language `{language}` is not offered: its interpreter is not installed on this node"
            )));
        }
        let code = str_field(payload, "code")?
            .ok_or_else(|| Refusal::Invalid("payload.code is required".into()))?;
        let stdin = str_field(payload, "stdin")?.unwrap_or("");
        if code.len() > MAX_SOURCE || stdin.len() > MAX_SOURCE {
            return Err(Refusal::Invalid(format!(
                "payload.code and payload.stdin are at most {MAX_SOURCE} bytes"
            )));
        }
        let timeout_ms = u64_field(payload, "timeout")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > self.cfg.max_timeout_ms {
            return Err(Refusal::Invalid(format!(
                "payload.timeout must be 1..={} ms",
                self.cfg.max_timeout_ms
            )));
        }
        let memory_mb = u64_field(payload, "memoryMb")?
            .unwrap_or(DEFAULT_MEMORY_MB.min(self.cfg.max_memory_mb));
        if !(16..=self.cfg.max_memory_mb).contains(&memory_mb) {
            return Err(Refusal::Invalid(format!(
                "payload.memoryMb must be 16..={}",
                self.cfg.max_memory_mb
            )));
        }
        Ok(Request {
            language,
            code,
            stdin,
            timeout_ms,
            memory_mb,
        })
    }

    async fn exec(&self, r: Request<'_>) -> Result<Output, Failure> {
        let interp = self
            .interpreter(r.language)
            .ok_or_else(|| Failure::new("interpreter missing"))?;
        let work = tempfile::Builder::new()
            .prefix("chainfront-code-")
            .tempdir()
            .map_err(|_| Failure::new("could not create the sandbox directory"))?;
        let file = match r.language {
            "python" => "main.py",
            "javascript" => "main.js",
            _ => "main.sh",
        };
        std::fs::write(work.path().join(file), r.code)
            .map_err(|_| Failure::new("could not write the program"))?;
        if self.as_root {
            let uid = self.cfg.sandbox_uid;
            for p in [work.path().to_path_buf(), work.path().join(file)] {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid))
                    .map_err(|_| Failure::new("could not prepare the sandbox directory"))?;
            }
        }
        let secs = r.timeout_ms.div_ceil(1000) + 1;
        let address_space_mb = if r.language == "javascript" {
            r.memory_mb.max(NODE_MIN_AS_MB)
        } else {
            r.memory_mb
        };
        let mut argv: Vec<String> = Vec::new();
        if self.as_root {
            let uid = self.cfg.sandbox_uid.to_string();
            argv.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ]);
        }
        argv.extend([
            "prlimit".into(),
            format!("--as={}", address_space_mb << 20),
            format!("--nproc={}", self.cfg.max_processes),
            format!("--cpu={secs}"),
            format!("--fsize={}", 16u64 << 20),
            "--nofile=256".into(),
            "--".into(),
            self.bwrap.display().to_string(),
        ]);
        for dir in ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc"] {
            if Path::new(dir).exists() {
                argv.extend(["--ro-bind".into(), dir.into(), dir.into()]);
            }
        }
        // An interpreter installed elsewhere (e.g. /opt/node/bin/node): its prefix, read-only.
        let real = std::fs::canonicalize(interp).unwrap_or_else(|_| interp.clone());
        if !["/usr/", "/bin/", "/lib", "/sbin/"]
            .iter()
            .any(|p| real.starts_with(p))
            && let Some(prefix) = real.parent().and_then(Path::parent)
        {
            argv.extend([
                "--ro-bind".into(),
                prefix.display().to_string(),
                prefix.display().to_string(),
            ]);
        }
        argv.extend([
            "--dev".into(),
            "/dev".into(),
            "--proc".into(),
            "/proc".into(),
            "--bind".into(),
            work.path().display().to_string(),
            "/work".into(),
            "--chdir".into(),
            "/work".into(),
            "--unshare-all".into(),
            "--die-with-parent".into(),
            "--new-session".into(),
            "--clearenv".into(),
            "--setenv".into(),
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin".into(),
            "--setenv".into(),
            "HOME".into(),
            "/work".into(),
            "--setenv".into(),
            "TMPDIR".into(),
            "/work".into(),
            "--".into(),
            real.display().to_string(),
        ]);
        if r.language == "javascript" {
            argv.push(format!("--max-old-space-size={}", r.memory_mb));
        }
        argv.push(file.into());
        let started = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|_| Failure::new("the sandbox could not be started"))?;
        let stdin = r.stdin.as_bytes().to_vec();
        let mut input = child.stdin.take();
        let feed = async move {
            if let Some(i) = input.as_mut() {
                let _ = i.write_all(&stdin).await;
            }
            drop(input);
        };
        let cap = usize::try_from(self.cfg.max_output_bytes).unwrap_or(usize::MAX);
        let out = child.stdout.take();
        let err = child.stderr.take();
        let run = async {
            let (_, o, e, status) =
                tokio::join!(feed, capped(out, cap), capped(err, cap), child.wait());
            (o, e, status)
        };
        let (stdout, stderr, code, timed_out) =
            match tokio::time::timeout(Duration::from_millis(r.timeout_ms), run).await {
                Ok(((o, ot), (e, et), status)) => {
                    let code = status.ok().and_then(|s| s.code());
                    ((o, ot), (e, et), code, false)
                }
                Err(_) => {
                    let _ = child.kill().await;
                    ((String::new(), false), (String::new(), false), None, true)
                }
            };
        let elapsed = started.elapsed();
        let ms = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .min(r.timeout_ms);
        Ok(Output {
            result: json!({
                "language": r.language,
                "stdout": stdout.0,
                "stderr": if timed_out { format!("killed: the program ran longer than {} ms", r.timeout_ms) } else { stderr.0 },
                "exitCode": code,
                "timedOut": timed_out,
                "truncated": stdout.1 || stderr.1,
                "durationMs": ms,
            }),
            units: Decimal::from(ms) / Decimal::from(1000u32),
        })
    }
}

/// Reads a pipe, keeping at most `cap` bytes (the rest is drained so the
/// child never blocks on a full pipe). Returns (text, truncated).
async fn capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (String, bool) {
    let Some(mut pipe) = pipe else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

impl Executor for Code {
    fn check(&self, payload: &Value) -> Result<Bound, Refusal> {
        let r = self.parse(payload)?;
        Ok(Some(Decimal::from(r.timeout_ms) / Decimal::from(1000u32)))
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let r = self
                .parse(payload)
                .map_err(|e| Failure::new(e.to_string()))?;
            self.exec(r).await
        }
        .boxed()
    }
}
