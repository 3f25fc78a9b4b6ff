//! Where chainfront's contracts live on one chain: written by `chainfront deploy`
//! and `chainfront dev`, read by `run`, `index` and the tests.

use std::path::Path;

use alloy::primitives::{Address, ChainId};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The addresses and start block of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// EIP-155 chain id the contracts were deployed on.
    pub chain_id: ChainId,
    /// First block that can hold an event of ours; the indexer starts here.
    pub start_block: u64,
    /// The USDC token (Circle's on Base, `MockUSDC` on a local chain).
    pub usdc: Address,
    /// The wrapped-BTC stake token (cbBTC on Base, `MockCbBTC` locally), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbbtc: Option<Address>,
    /// The ERC-721 VM marketplace.
    pub vm_marketplace: Address,
    /// The prediction-market stakes contract, if deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_stakes: Option<Address>,
    /// Where payments go.
    pub treasury: Address,
    /// The account that deployed (and owns) the contracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployer: Option<Address>,
}

impl Deployment {
    /// Reads a deployment file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::DeploymentIo {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::DeploymentFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the deployment as pretty JSON, creating parent directories. The
    /// file is written beside its final name and renamed, so a reader never sees
    /// half of it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |source| Error::DeploymentIo {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut text =
            serde_json::to_string_pretty(self).map_err(|source| Error::DeploymentFormat {
                path: path.to_owned(),
                source,
            })?;
        text.push('\n');
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deployment.json");
        let d = Deployment {
            chain_id: 31337,
            start_block: 7,
            usdc: Address::repeat_byte(1),
            cbbtc: None,
            vm_marketplace: Address::repeat_byte(2),
            submission_stakes: Some(Address::repeat_byte(3)),
            treasury: Address::repeat_byte(4),
            deployer: None,
        };
        d.write(&path).expect("write");
        assert_eq!(Deployment::read(&path).expect("read"), d);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(
            !text.contains("cbbtc"),
            "absent optional fields are omitted: {text}"
        );
    }

    #[test]
    fn malformed_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"chain_id\": \"x\"}").expect("write");
        let err = Deployment::read(&path).expect_err("must fail").to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
