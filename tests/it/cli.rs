//! The `chainfront` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chainfront_indexer::deployment::Deployment;

use crate::harness::{local_toml, repo_root, run_in_repo};

fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_chainfront"))
}

#[test]
fn config_check_names_the_bad_key() {
    let local = local_toml();
    let local = local.to_str().expect("utf8");
    let (ok, _, err) = run_in_repo(
        &bin(),
        &["config", "check", "--config", local],
        &[("CHAINFRONT_CHAINS__LOCAL__POLL_INTERVAL_MS", "soon")],
    );
    assert!(!ok);
    assert!(err.contains("chains.local.poll_interval_ms"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let mainnet = repo_root().join("config/base-mainnet.toml");
    let mainnet = mainnet.to_str().expect("utf8");
    let treasury = format!("0x{}", "12".repeat(20));
    let (ok, out, err) = run_in_repo(
        &bin(),
        &["config", "check", "--config", mainnet],
        &[
            ("CHAINFRONT_CHAINS__BASE__TREASURY", &treasury),
            ("CHAINFRONT_JWT_SECRET", "do-not-print-me"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("chain_id = 8453"), "{out}");
    assert!(out.contains("# jwt_secret: set"), "{out}");
    assert!(!out.contains("do-not-print-me") && !err.contains("do-not-print-me"));
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn port_of(line: &str, scheme: &str) -> Option<u16> {
    let rest = &line[line.find(scheme)? + scheme.len()..];
    let rest = rest
        .strip_prefix("127.0.0.1:")
        .or_else(|| rest.strip_prefix("localhost:"))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `chainfront dev` as a child process, up and with its banner read.
struct DevProcess {
    child: std::process::Child,
    banner: String,
    api_port: u16,
    chain_port: u16,
    redis_port: u16,
    deployment_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DevProcess {
    fn start() -> DevProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let deployment_file = dir.path().join("deployment.json");
        let api_port = chainfront::devnet::free_port().expect("port");
        let mut child = Command::new(bin())
            .args(["dev", "--config"])
            .arg(local_toml())
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .env(
                "CHAINFRONT_CHAINS__LOCAL__DEPLOYMENT_FILE",
                &deployment_file,
            )
            .env("CHAINFRONT_LOG__FILTER", "warn")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chainfront dev");

        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut chain_port, mut redis_port, mut up) = (None, None, false);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = String::new();
        // The banner ends with the `/tiers` example.
        while !(up && chain_port.is_some() && redis_port.is_some() && seen.contains("/tiers")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("dev did not come up; stdout so far:\n{seen}");
                }
            };
            seen.push_str(&line);
            seen.push('\n');
            up |= line.contains("chainfront dev is up");
            if line.trim_start().starts_with("chain ") {
                chain_port = port_of(&line, "http://");
            }
            if line.trim_start().starts_with("redis ") {
                redis_port = port_of(&line, "redis://");
            }
        }
        DevProcess {
            child,
            banner: seen,
            api_port,
            chain_port: chain_port.expect("chain port"),
            redis_port: redis_port.expect("redis port"),
            deployment_file,
            _dir: dir,
        }
    }

    /// The private key the banner prints for demo wallet `n`.
    fn demo_key(&self, n: usize) -> String {
        let line = self
            .banner
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("demo wallet {n}:")))
            .expect("demo wallet line");
        line.split_whitespace()
            .skip_while(|w| *w != "key")
            .nth(1)
            .expect("key")
            .to_owned()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// `chainfront dev` brings up a node whose /health reports the chain id and
/// the deployed addresses, and Ctrl-C leaves nothing running.
#[tokio::test]
async fn dev_runs_the_stack_and_ctrl_c_stops_everything() {
    let mut dev = DevProcess::start();
    let (api_port, chain_port, redis_port) = (dev.api_port, dev.chain_port, dev.redis_port);
    assert!(port_open(chain_port) && port_open(redis_port));
    assert!(
        dev.banner.contains("purchaseVM(uint8,uint16)"),
        "prints what to try next:\n{}",
        dev.banner
    );

    let deployment = Deployment::read(&dev.deployment_file).expect("dev wrote the deployment file");
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{api_port}/health"))
        .await
        .expect("GET /health")
        .json()
        .await
        .expect("json");
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["chain_id"], 31337);
    assert_eq!(
        body["contracts"]["vm_marketplace"],
        deployment.vm_marketplace.to_string()
    );
    assert_eq!(body["contracts"]["usdc"], deployment.usdc.to_string());

    let status = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = dev.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "dev exits cleanly on Ctrl-C: {exit}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (port_open(chain_port) || port_open(redis_port) || port_open(api_port))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!port_open(chain_port), "anvil still running after Ctrl-C");
    assert!(
        !port_open(redis_port),
        "redis-server still running after Ctrl-C"
    );
    assert!(!port_open(api_port), "API still listening after Ctrl-C");
}

/// The document's users write Python with `eth_account` and `requests`: that
/// client buys a VM on the dev chain, signs in with EIP-4361 (a message built
/// and signed by `eth_account`, checked by the node) and fetches its
/// credentials with the token.
#[test]
fn a_python_eth_account_client_buys_a_vm_and_gets_credentials_from_dev() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/bootstrap first (it creates .venv with eth-account and requests)"
    );
    let dev = DevProcess::start();
    let d = Deployment::read(&dev.deployment_file).expect("deployment");
    let key = dev.demo_key(1);
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/clawcloud_client.py"))
        .args(["--api", &format!("http://127.0.0.1:{}", dev.api_port)])
        .args(["--rpc", &format!("http://127.0.0.1:{}", dev.chain_port)])
        .args(["--key", &key])
        .args(["--usdc", &d.usdc.to_string()])
        .args(["--vm", &d.vm_marketplace.to_string()])
        .args(["--tier", "1", "--days", "3"])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
    let creds: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON credentials");
    assert_eq!(creds["tokenId"], "1");
    assert_eq!(creds["tier"], 1);
    assert_eq!(creds["username"], "root");
    let pk = creds["privateKey"].as_str().expect("private key");
    ssh_key::PrivateKey::from_openssh(pk).expect("an OpenSSH private key");
}
