//! Finds the external programs chainfront drives locally: the npm-pinned
//! Foundry binaries (anvil, cast, forge) and redis-server.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A Foundry binary shipped by the `@foundry-rs/<name>-linux-amd64` npm package.
#[derive(Debug, Clone, Copy)]
pub enum Foundry {
    /// The local chain.
    Anvil,
    /// The command-line client.
    Cast,
    /// The Solidity build and test tool.
    Forge,
}

impl Foundry {
    fn name(self) -> &'static str {
        match self {
            Foundry::Anvil => "anvil",
            Foundry::Cast => "cast",
            Foundry::Forge => "forge",
        }
    }

    /// Where the binary is: `CHAINFRONT_<NAME>_BIN` if set, else
    /// `node_modules/@foundry-rs/<name>-linux-amd64/bin/<name>` in the current
    /// directory or any parent, else in the source tree chainfront was built
    /// from, else `<name>` on `PATH`.
    pub fn path(self) -> Result<PathBuf> {
        let name = self.name();
        if let Some(p) = std::env::var_os(format!("CHAINFRONT_{}_BIN", name.to_uppercase())) {
            return Ok(PathBuf::from(p));
        }
        let rel = Path::new("node_modules/@foundry-rs")
            .join(format!("{name}-linux-amd64"))
            .join("bin")
            .join(name);
        let mut roots: Vec<PathBuf> = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            roots.extend(cwd.ancestors().map(Path::to_path_buf));
        }
        roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        if let Some(found) = roots.iter().map(|r| r.join(&rel)).find(|p| p.is_file()) {
            return Ok(found);
        }
        which(name).ok_or_else(|| Error::Process {
            program: name.into(),
            message: format!(
                "not found: run `npm ci` in the chainfront checkout (it pins {name} in package.json) or set CHAINFRONT_{}_BIN",
                name.to_uppercase()
            ),
        })
    }
}

/// `redis-server` from `CHAINFRONT_REDIS_SERVER_BIN` or `PATH`.
pub fn redis_server() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHAINFRONT_REDIS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    which("redis-server").ok_or_else(|| Error::Process {
        program: "redis-server".into(),
        message: "not found on PATH: install it (`apt-get install -y redis-server`) or set CHAINFRONT_REDIS_SERVER_BIN"
            .into(),
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
