//! Local services as child processes: anvil and redis-server on free loopback
//! ports with their data in temp dirs, killed when dropped. `chainfront dev`
//! and the integration tests both start their stacks through here.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::node_bindings::{Anvil, AnvilInstance};

use crate::toolchain::{self, Foundry};
use crate::{Error, Result};

/// A free TCP port on 127.0.0.1 (the OS picks it; a tiny race with other
/// processes remains, which callers tolerate by retrying start-up).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| Error::Io {
        context: "binding a free port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            context: "reading a bound port".into(),
            source,
        })
}

/// Starts anvil from the npm Foundry package on a free port. `block_time`
/// `None` means automine. The instance kills anvil when dropped.
pub fn start_anvil(chain_id: u64, block_time: Option<u64>) -> Result<AnvilInstance> {
    let mut anvil = Anvil::at(Foundry::Anvil.path()?).chain_id(chain_id);
    if let Some(secs) = block_time {
        anvil = anvil.block_time(secs);
    }
    anvil.try_spawn().map_err(|e| Error::Process {
        program: "anvil".into(),
        message: e.to_string(),
    })
}

/// A redis-server child process with its own data directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    fsync: &'static str,
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts redis-server on a free port with AOF on (`appendfsync
    /// always`), in a fresh temp dir.
    pub fn start() -> Result<Self> {
        Self::start_with_fsync("always")
    }

    /// Starts redis-server with AOF on and `appendfsync <fsync>` (`always`,
    /// `everysec` or `no`).
    pub fn start_with_fsync(fsync: &'static str) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("chainfront-redis-")
            .tempdir()
            .map_err(|source| Error::Io {
                context: "creating a temp dir for redis".into(),
                source,
            })?;
        let dir = tmp.path().to_path_buf();
        let mut last = None;
        // A port picked by free_port can be taken before redis binds it; retry.
        for _ in 0..5 {
            let port = free_port()?;
            match Self::spawn(port, &dir, fsync) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        dir,
                        fsync,
                        _tmp: Some(tmp),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Process {
            program: "redis-server".into(),
            message: "could not start".into(),
        }))
    }

    fn spawn(port: u16, dir: &Path, fsync: &str) -> Result<Child> {
        let bin = toolchain::redis_server()?;
        let mut child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                fsync,
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Process {
                program: bin.display().to_string(),
                message: e.to_string(),
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Process {
                    program: "redis-server".into(),
                    message: format!("exited at start-up with {status}"),
                });
            }
            if ping(port) {
                return Ok(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(Error::Process {
            program: "redis-server".into(),
            message: format!("did not answer PING on port {port} within 10s"),
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL: nothing is flushed beyond what AOF already
    /// has) and starts it again on the same port and data, as a crash would.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start_again()
    }

    /// Stops the server like a crash (SIGKILL); [`RedisServer::start_again`]
    /// brings it back on the same port and data.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again on the same port and data directory.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_none() {
            self.child = Some(Self::spawn(self.port, &self.dir, self.fsync)?);
        }
        Ok(())
    }

    /// Where the server keeps its data (the AOF directory lives in it).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bare RESP `PING` over TCP, to know when redis-server is ready without
/// needing an async runtime.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
