//! VM credentials: who is served which SSH key, and when. No HTTP here: the
//! `/credentials` handler in `api::vms` parses the request, pre-checks the
//! credential (`auth`), calls [`Desk::deliver`] and maps [`CredentialsError`].
//!
//! The rules:
//! - the owner is the indexed owner; when the index trails the head by more
//!   than `confirmations + 2` blocks, `ownerOf` / `isTokenValid` are read on
//!   chain at the *confirmed* height (`head - confirmations`), never at
//!   `latest`;
//! - a key is served only to the owner it was made for (`key_owner`): right
//!   after a transfer the new owner hears 202 until the re-key is done, and
//!   only for the purchase it was made for (`purchase_tx`);
//! - with one-time delivery, the request is checked to be servable (the
//!   encoding chosen, the key decrypted) *before* the key is erased, and only
//!   the one request whose `HDEL` wins gets it;
//! - `?encrypt=owner` encrypts to the public key of the owner's own ECDSA
//!   signature only (never a JWT or a contract wallet's approval, whose
//!   recovered key may belong to nobody).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::eips::BlockId;
use alloy::primitives::{Address, U256};
use alloy::transports::{RpcError, TransportResult};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::VMMarketplace;
use chainfront_indexer::keys::{ChainKeys, lower};
use chainfront_indexer::rpc::Rpc;
use zeroize::Zeroizing;

use crate::auth::{Auth, AuthError, VmCredential};
use crate::crypto::ecies::{self, Keyring};
use crate::provision::queue::{Record, Status};
use crate::provision::worker::key_aad;

/// Blocks the indexer may trail the head (beyond the confirmation depth)
/// before ownership is checked on chain instead.
pub const STALE_SLACK: u64 = 2;

/// What `/credentials` answers.
#[derive(Debug)]
pub enum Delivery {
    /// 202: not ready (provisioning, re-keying, or not indexed yet).
    Pending {
        /// For the client.
        message: &'static str,
    },
    /// 200.
    Ready(Credentials),
}

/// What [`Desk::check`] found.
#[derive(Debug)]
pub enum Checked {
    /// 202 with this message: not ready (provisioning, re-keying, or not
    /// indexed yet).
    Pending(&'static str),
    /// The key may be served: [`Desk::serve`].
    Servable(Box<Servable>),
}

/// A credentials request that may be served (the owner proven, the VM
/// valid and running, the key made for this owner, the encoding chosen).
#[derive(Debug)]
pub struct Servable {
    id: U256,
    vm: HashMap<String, String>,
    rec: Record,
    encrypt_to: Option<k256::PublicKey>,
}

/// A VM's login, for its owner.
#[derive(Debug)]
pub struct Credentials {
    /// SSH host.
    pub host: String,
    /// SSH user.
    pub username: String,
    /// The private key (OpenSSH text, or an `ecc:` value for
    /// `encrypt=owner`); `None` once one-time delivery erased it.
    pub private_key: Option<Zeroizing<String>>,
    /// `openssh` or `ecies-secp256k1`.
    pub encoding: &'static str,
    /// Tier 0-7.
    pub tier: u64,
    /// NFT expiry, unix seconds.
    pub expires_at: u64,
    /// Why there is no key, if there is none.
    pub note: Option<&'static str>,
}

/// Why credentials are not served.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// 404.
    #[error("VM #{0} not found")]
    NotFound(U256),
    /// 403: the NFT expired.
    #[error("NFT #{id} expired at {at}")]
    Expired {
        /// Token id.
        id: U256,
        /// ISO 8601.
        at: String,
    },
    /// 403: the VM is gone.
    #[error("VM #{0} has been terminated")]
    Terminated(U256),
    /// 400.
    #[error("{0}")]
    BadRequest(&'static str),
    /// 401 / 403 / 503 from authentication.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 503: a chain read failed (cause for logs only).
    #[error("chain: {0}")]
    Chain(String),
    /// 503: Redis failed.
    #[error(transparent)]
    Store(#[from] redis::RedisError),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

const ERASED: &str = "the private key was delivered once and then erased (one-time delivery)";

/// Everything credential delivery reads.
#[derive(Clone)]
pub struct Desk {
    /// State store.
    pub redis: RedisConn,
    /// Key schema of the home chain.
    pub keys: ChainKeys,
    /// Chain reads.
    pub rpc: Rpc,
    /// Signature checks.
    pub auth: Arc<Auth>,
    /// Master keys (`None`: no sealed key can be opened).
    pub keyring: Option<Arc<Keyring>>,
    /// The VM marketplace.
    pub marketplace: Address,
    /// The home chain's confirmation depth.
    pub confirmations: u64,
    /// Erase keys after their first delivery.
    pub one_time_delivery: bool,
    /// Latest head seen (0 until known).
    pub head: Arc<AtomicU64>,
    /// Its timestamp.
    pub head_time: Arc<AtomicU64>,
}

/// The VM fields delivery reads.
const VM_FIELDS: &[&str] = &["owner", "expires_at", "tier", "purchase_tx"];
/// The record fields delivery reads.
const RECORD_FIELDS: &[&str] = &[
    "status",
    "host",
    "username",
    "private_key",
    "key_delivered",
    "purchase_tx",
    "key_owner",
];

/// The present fields of an `HMGET` answer, by name.
fn fields(names: &[&str], values: Vec<Option<String>>) -> HashMap<String, String> {
    names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| v.map(|v| ((*n).to_owned(), v)))
        .collect()
}

fn num(h: &HashMap<String, String>, k: &str) -> u64 {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn iso(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(crate::time::iso8601)
        .unwrap_or_else(|| "an unknown time".into())
}

/// `Ok(None)` for a call the contract refused (revert: e.g. no such token),
/// `Err` only when the chain could not be asked.
fn refused_as_none<T>(r: Result<T, alloy::contract::Error>) -> TransportResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(alloy::contract::Error::TransportError(RpcError::ErrorResp(_))) => Ok(None),
        Err(alloy::contract::Error::TransportError(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

impl Desk {
    fn now(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        wall.max(self.head_time.load(Ordering::Relaxed))
    }

    /// The credentials of VM `id` for the caller `credential` proves, if it
    /// proves the owner. `encrypt`: `?encrypt=owner`.
    pub async fn deliver(
        &self,
        id: U256,
        credential: VmCredential,
        encrypt: bool,
    ) -> Result<Delivery, CredentialsError> {
        match self.check(id, credential, encrypt).await? {
            Checked::Pending(message) => Ok(Delivery::Pending { message }),
            Checked::Servable(s) => self.serve(s).await,
        }
    }

    /// Everything [`Desk::deliver`] decides before it reads the key: the
    /// caller proven the owner of a valid, running VM whose key was made for
    /// it, and the encoding chosen. A caller that must do something between
    /// the decision and the key (`/x402/vm-credentials` settles its payment
    /// there, so a 401, 403, 404 or 202 never costs anything) calls this,
    /// then [`Desk::serve`].
    pub async fn check(
        &self,
        id: U256,
        credential: VmCredential,
        encrypt: bool,
    ) -> Result<Checked, CredentialsError> {
        let k = &self.keys;
        let mut c = self.redis.clone();
        // Only the fields delivery needs (the record also holds a public key,
        // timestamps, errors): less to parse on the hottest route.
        let (vm, rec, checkpoint): (Vec<Option<String>>, Vec<Option<String>>, Option<u64>) =
            redis::pipe()
                .cmd("HMGET")
                .arg(k.vm(id))
                .arg(VM_FIELDS)
                .cmd("HMGET")
                .arg(k.provision(id))
                .arg(RECORD_FIELDS)
                .hget(k.checkpoint(), "number")
                .query_async(&mut c)
                .await?;
        let (vm, rec) = (fields(VM_FIELDS, vm), fields(RECORD_FIELDS, rec));
        if vm.is_empty() {
            return self.not_indexed_yet(id, credential).await;
        }
        let mut owner: Address = vm
            .get("owner")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| {
                CredentialsError::Internal(format!("VM #{id} has no owner in the index"))
            })?;
        let mut valid = num(&vm, "expires_at") > self.now();
        let head = self.head.load(Ordering::Relaxed);
        if head > 0
            && checkpoint
                .is_none_or(|cp| head.saturating_sub(cp) > self.confirmations + STALE_SLACK)
        {
            // The index trails the chain: ask the contract at the confirmed
            // height, so a confirmed transfer is honoured at once and an
            // unconfirmed one (which may be reorged out) never is.
            let at = BlockId::number(head.saturating_sub(self.confirmations));
            let (o, v) = self.on_chain(id, at).await?;
            owner = o.ok_or(CredentialsError::NotFound(id))?;
            valid = v.unwrap_or(false);
        }
        let caller = self.auth.complete_vm_access(credential, owner).await?;
        if !valid {
            return Err(CredentialsError::Expired {
                id,
                at: iso(num(&vm, "expires_at")),
            });
        }
        let rec = Record::from_hash(&rec).unwrap_or_default();
        match rec.status() {
            Status::Running => {}
            Status::Expired | Status::Terminated => return Err(CredentialsError::Terminated(id)),
            Status::Rekeying => {
                return Ok(Checked::Pending(
                    "the VM changed hands and is being re-keyed for its new owner; try again in a minute",
                ));
            }
            Status::Failed => {
                return Ok(Checked::Pending(
                    "provisioning failed and is waiting for an operator; try again later",
                ));
            }
            Status::Queued | Status::Provisioning => {
                return Ok(Checked::Pending(
                    "provisioning in progress; try again in a minute",
                ));
            }
        }
        // A record made for another purchase of this token id (before a
        // reorg) or a key made for a previous owner is never served.
        if rec
            .purchase_tx
            .as_ref()
            .is_some_and(|tx| Some(tx) != vm.get("purchase_tx"))
        {
            return Ok(Checked::Pending(
                "provisioning in progress; try again in a minute",
            ));
        }
        if rec.key_owner.as_ref().is_some_and(|o| *o != lower(owner)) {
            return Ok(Checked::Pending(
                "the VM changed hands and is being re-keyed for its new owner; try again in a minute",
            ));
        }
        // Decide the encoding before anything is erased.
        let encrypt_to = if encrypt {
            Some(caller.public_key.ok_or(CredentialsError::BadRequest(
                "encrypt=owner needs a signature by the owner's own key (not a sign-in token or a contract wallet): the key is encrypted to the signer's public key",
            ))?)
        } else {
            None
        };
        Ok(Checked::Servable(Box::new(Servable {
            id,
            vm,
            rec,
            encrypt_to,
        })))
    }

    /// Reads (and, with one-time delivery, erases) the key of a request
    /// [`Desk::check`] found servable.
    pub async fn serve(&self, s: Box<Servable>) -> Result<Delivery, CredentialsError> {
        let Servable {
            id,
            vm,
            rec,
            encrypt_to,
        } = *s;
        let k = &self.keys;
        let mut c = self.redis.clone();
        let mut note = None;
        let sealed = match (&rec.private_key, rec.key_delivered) {
            (Some(sealed), false) => Some(sealed),
            (_, true) => {
                note = Some(ERASED);
                None
            }
            (None, false) => None,
        };
        let mut private_key = match sealed {
            Some(s) => {
                let keyring = self.keyring.as_ref().ok_or_else(|| {
                    CredentialsError::Internal(
                        "a sealed key is stored but no master key is configured".into(),
                    )
                })?;
                let aad = key_aad(k, id);
                // A key delivered once is opened once: nothing to remember.
                let plain = if self.one_time_delivery {
                    keyring.open_string(s, &aad)
                } else {
                    keyring.open_string_cached(s, &aad)
                }
                .map_err(|e| CredentialsError::Internal(e.to_string()))?;
                Some(match &encrypt_to {
                    Some(public) => Zeroizing::new(ecies::encrypt_to(public, plain.as_bytes())),
                    None => plain,
                })
            }
            None => None,
        };
        if private_key.is_some() && self.one_time_delivery {
            // HDEL answers 1 to exactly one request: only that one gets the key.
            let (deleted, ()): (u32, ()) = redis::pipe()
                .hdel(k.provision(id), "private_key")
                .hset(k.provision(id), "key_delivered", "1")
                .query_async(&mut c)
                .await?;
            if deleted == 0 {
                private_key = None;
                note = Some(ERASED);
            }
        }
        Ok(Delivery::Ready(Credentials {
            host: rec.host.clone().unwrap_or_default(),
            username: rec.username.clone().unwrap_or_else(|| "root".into()),
            encoding: if encrypt_to.is_some() {
                "ecies-secp256k1"
            } else {
                "openssh"
            },
            private_key,
            tier: num(&vm, "tier"),
            expires_at: num(&vm, "expires_at"),
            note,
        }))
    }

    /// `ownerOf` and `isTokenValid` at `at`; `None` where the contract
    /// refused (no such token).
    async fn on_chain(
        &self,
        id: U256,
        at: BlockId,
    ) -> Result<(Option<Address>, Option<bool>), CredentialsError> {
        let marketplace = self.marketplace;
        let owner = self.rpc.call("ownerOf", |p| async move {
            refused_as_none(
                VMMarketplace::new(marketplace, p)
                    .ownerOf(id)
                    .block(at)
                    .call()
                    .await,
            )
        });
        let valid = self.rpc.call("isTokenValid", |p| async move {
            refused_as_none(
                VMMarketplace::new(marketplace, p)
                    .isTokenValid(id)
                    .block(at)
                    .call()
                    .await,
            )
        });
        let (owner, valid) = tokio::join!(owner, valid);
        let chain = |e: chainfront_indexer::Error| CredentialsError::Chain(e.to_string());
        Ok((owner.map_err(chain)?, valid.map_err(chain)?))
    }

    /// A token the index does not have: if the chain has it (a purchase newer
    /// than the index), its owner hears 202 as for provisioning; else 404. The credential was pre-checked, so anonymous
    /// or malformed requests never get here.
    async fn not_indexed_yet(
        &self,
        id: U256,
        credential: VmCredential,
    ) -> Result<Checked, CredentialsError> {
        // `latest`: this only decides 202 or 404 (no secret is served), and a
        // purchase newer than the confirmed height is exactly what it is for.
        let at = BlockId::latest();
        let marketplace = self.marketplace;
        let owner = self
            .rpc
            .call("ownerOf", |p| async move {
                refused_as_none(
                    VMMarketplace::new(marketplace, p)
                        .ownerOf(id)
                        .block(at)
                        .call()
                        .await,
                )
            })
            .await
            .map_err(|e| CredentialsError::Chain(e.to_string()))?
            .ok_or(CredentialsError::NotFound(id))?;
        self.auth.complete_vm_access(credential, owner).await?;
        Ok(Checked::Pending(
            "purchase seen on chain; provisioning starts once it is confirmed",
        ))
    }
}
