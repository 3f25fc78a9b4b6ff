//! The Redis key schema: every key chainfront reads or writes is built here
//! and nowhere else (documented in `docs/state.md`).
//!
//! All keys of one chain share the hash tag `{c<chain_id>}`, so they live in
//! one Redis Cluster slot and one Lua script can commit a block atomically.
//! Derived chain state sits under `cf:{c<id>}:s:` (what `state-digest`
//! hashes); the indexer's own bookkeeping under `cf:{c<id>}:m:`.

use alloy::primitives::{Address, B256, FixedBytes, U256};

/// Key builder for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainKeys {
    chain_id: u64,
    /// `cf:{c<id>}:`
    base: String,
}

impl ChainKeys {
    /// Keys for `chain_id`.
    pub fn new(chain_id: u64) -> Self {
        Self {
            chain_id,
            base: format!("cf:{{c{chain_id}}}:"),
        }
    }

    /// The chain these keys belong to.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn s(&self, rest: &str) -> String {
        let mut k = String::with_capacity(self.base.len() + 2 + rest.len());
        k.push_str(&self.base);
        k.push_str("s:");
        k.push_str(rest);
        k
    }

    /// `<base>s:<what>:<wallet, lowercase hex>`, built in one buffer (these
    /// keys are written for every deposit a backfill applies).
    fn s_wallet(&self, what: &str, wallet: Address) -> String {
        let mut k = String::with_capacity(self.base.len() + what.len() + 45);
        k.push_str(&self.base);
        k.push_str("s:");
        k.push_str(what);
        k.push(':');
        push_lower(&mut k, wallet);
        k
    }

    fn m(&self, rest: &str) -> String {
        format!("{}m:{rest}", self.base)
    }

    /// Pattern matching every derived-state key of this chain.
    pub fn state_pattern(&self) -> String {
        self.s("*")
    }

    // ---- indexer bookkeeping ----

    /// Hash `{number, hash}`: the last block whose effects are committed.
    pub fn checkpoint(&self) -> String {
        self.m("checkpoint")
    }

    /// Hash block number → block hash for the recent window (reorg detection).
    pub fn block_hashes(&self) -> String {
        self.m("hashes")
    }

    /// String: the undo record of one block in the window.
    pub fn undo(&self, block: u64) -> String {
        self.m(&format!("undo:{block}"))
    }

    /// Pattern matching every undo record.
    pub fn undo_pattern(&self) -> String {
        self.m("undo:*")
    }

    /// String: present while a `reindex` wipe is under way (a tombstone). A
    /// start that finds it finishes the wipe before anything else; commits
    /// refuse to run while it exists.
    pub fn wipe(&self) -> String {
        self.m("wipe")
    }

    /// String: the current leader's fencing token.
    pub fn leader(&self) -> String {
        self.m("leader")
    }

    /// Counter that hands out fencing tokens.
    pub fn fence(&self) -> String {
        self.m("fence")
    }

    // ---- VMs ----

    /// Hash: one VM NFT (owner, tier, buyer, purchase_date, expires_at, total_cost, ...).
    pub fn vm(&self, token_id: U256) -> String {
        self.s(&format!("vm:{token_id}"))
    }

    /// Set of token ids owned by `owner`.
    pub fn owner_vms(&self, owner: Address) -> String {
        self.s(&format!("owner:{}:vms", lower(owner)))
    }

    /// Set of every minted token id.
    pub fn vms(&self) -> String {
        self.s("vms")
    }

    /// Hash: one tier (price, active, name).
    pub fn tier(&self, tier: u8) -> String {
        self.s(&format!("tier:{tier}"))
    }

    /// Set of configured tier numbers.
    pub fn tiers(&self) -> String {
        self.s("tiers")
    }

    /// Hash: marketplace-wide settings (treasury, paused).
    pub fn vm_settings(&self) -> String {
        self.s("vm:settings")
    }

    // ---- markets ----

    /// Set of market ids (`0x` + 32 hex digits).
    pub fn markets(&self) -> String {
        self.s("markets")
    }

    /// Hash: one market.
    pub fn market(&self, id: FixedBytes<16>) -> String {
        self.s(&format!("market:{id}"))
    }

    /// Sorted set of a market's submission ids (score = id).
    pub fn market_submissions(&self, id: FixedBytes<16>) -> String {
        self.s(&format!("market:{id}:subs"))
    }

    /// Hash: one submission.
    pub fn submission(&self, id: U256) -> String {
        self.s(&format!("sub:{id}"))
    }

    /// String: submission id recorded for a payment transaction hash.
    pub fn payment(&self, tx: B256) -> String {
        self.s(&format!("payment:{tx}"))
    }

    /// Hash: stakes-contract settings (fee_bps, treasury, operator:*, token:*).
    pub fn stakes_settings(&self) -> String {
        self.s("stakes:settings")
    }

    // ---- deposits ----

    /// Hash of every USDC deposit to the treasury on this chain: field
    /// [`ChainKeys::deposit_id`], value `<from>:<amount>:<block>`. One hash
    /// rather than a key per deposit: a backfill writes it with one command
    /// per commit instead of one per deposit.
    pub fn deposits(&self) -> String {
        self.s("deposits")
    }

    /// A deposit's field in [`ChainKeys::deposits`] and member in
    /// [`ChainKeys::wallet_deposits`]: `<tx hash>:<log index>`.
    pub fn deposit_id(tx: B256, log_index: u64) -> String {
        let mut id = String::with_capacity(87);
        push_hex(&mut id, tx.as_slice());
        id.push(':');
        id.push_str(itoa::Buffer::new().format(log_index));
        id
    }

    /// Sorted set of a wallet's deposits (member `tx:logindex`, score = block).
    pub fn wallet_deposits(&self, wallet: Address) -> String {
        self.s_wallet("deps", wallet)
    }

    /// String: a wallet's running deposit total in USDC base units.
    pub fn wallet_deposit_total(&self, wallet: Address) -> String {
        self.s_wallet("deptotal", wallet)
    }

    /// Sorted set of deposit ids by block: one member per block with
    /// deposits, its ids (`tx:log`, as in [`ChainKeys::deposits`])
    /// space-separated, scored by the block (one write per block, not per
    /// deposit; a member holding a single id is the same list of one). What
    /// the ledger's reconciler follows to credit deposits in block order
    /// (`ZRANGEBYSCORE`), written alongside `s:deposits`.
    pub fn deposits_by_block(&self) -> String {
        self.s("depblocks")
    }
}

impl ChainKeys {
    /// `cf:{c<id>}:p:<rest>`: node-owned state about this chain's VMs
    /// (provisioning, encrypted credentials). Same hash tag as the VM it
    /// describes, so one round trip reads both.
    fn p(&self, rest: &str) -> String {
        format!("{}p:{rest}", self.base)
    }

    // ---- provisioning (written by the API node, not the indexer) ----

    /// Hash: provisioning record of one VM (status, attempts, host, username,
    /// instance id, vm_type, encrypted private key, timestamps, last error).
    pub fn provision(&self, token_id: U256) -> String {
        self.p(&format!("vm:{token_id}"))
    }

    /// Pattern matching every provisioning record of this chain.
    pub fn provision_pattern(&self) -> String {
        self.p("vm:*")
    }

    /// Sorted set: token ids waiting for provisioning, score = due time (unix ms).
    pub fn provision_queue(&self) -> String {
        self.p("queue")
    }

    /// Set: token ids whose provisioning failed past the attempt limit.
    pub fn provision_failed(&self) -> String {
        self.p("failed")
    }

    /// Sorted set: provisioned token ids, score = expiry (unix s), for the sweeper.
    pub fn provision_expiry(&self) -> String {
        self.p("expiry")
    }

    /// Set of VMPurchased token ids the enqueuer has seen (idempotent enqueue).
    pub fn provision_seen(&self) -> String {
        self.p("seen")
    }

    // ---- transactions the node signs (`src/chain`) ----

    /// Hash: the transaction signed for one send id (`hash`, `nonce`, `raw`),
    /// written before it is broadcast.
    pub fn tx(&self, send_id: &str) -> String {
        format!("{}t:tx:{send_id}", self.base)
    }

    /// String: the send id a transaction this node signed was sent under
    /// (`x402:…` for x402 settlements), written with [`ChainKeys::tx`]
    /// before the broadcast, so a reader of the chain can tell the node's own
    /// transactions by hash before they can be mined.
    pub fn tx_sent(&self, hash: B256) -> String {
        format!("{}t:sent:{hash:#x}", self.base)
    }

    /// String: the next nonce this node hands out for a signer.
    pub fn tx_nonce(&self, signer: Address) -> String {
        format!("{}t:nonce:{}", self.base, lower(signer))
    }

    /// String with a TTL: the lock a replica holds while it signs and
    /// broadcasts for a signer.
    pub fn tx_lock(&self, signer: Address) -> String {
        format!("{}t:lock:{}", self.base, lower(signer))
    }

    // ---- x402 payments (`src/x402`) ----

    /// Hash with a TTL: the claim on one EIP-3009 authorization — (token,
    /// payer, nonce) on this chain — from its first paid request until after
    /// it can no longer be used: state, settlement, the answer for replays.
    pub fn x402_claim(&self, token: Address, payer: Address, nonce: B256) -> String {
        format!(
            "{}x:claim:{}:{}:{nonce:#x}",
            self.base,
            lower(token),
            lower(payer)
        )
    }

    /// Hash of every settled x402 payment on this chain: field
    /// `<tx hash>:<log index>` of its USDC `Transfer` (the deposit id of
    /// [`ChainKeys::deposit_id`]), value JSON `{payer, amount, to, route}`.
    /// A transfer listed here is a payment, never a deposit.
    pub fn x402_payments(&self) -> String {
        format!("{}x:payments", self.base)
    }
}

impl ChainKeys {
    /// `cf:{c<id>}:n:<rest>`: node-owned state about this chain's markets
    /// (submission claims). Same hash tag as the indexed markets, so one Lua
    /// script can check the index and claim atomically.
    fn n(&self, rest: &str) -> String {
        format!("{}n:{rest}", self.base)
    }

    // ---- submission claims (written by the API node, not the indexer) ----

    /// Hash: the claim of one payment transaction hash by a submission
    /// (status, the submission's fields, record tx, submission id, error).
    pub fn submission_claim(&self, tx: B256) -> String {
        self.n(&format!("claim:{tx}"))
    }

    /// Sorted set: payment tx hashes whose submission still has to be
    /// recorded on chain, score = due time (unix ms; leased by pushing it ahead).
    pub fn submission_claim_queue(&self) -> String {
        self.n("claims:queue")
    }

    /// String: the payment tx hash of the original submission of a market
    /// that is claimed but not indexed yet (a second original is refused).
    pub fn original_pending(&self, market: FixedBytes<16>) -> String {
        self.n(&format!("original:{market}"))
    }
}

/// Keys of node-wide state that is not about one chain: rate limits, bans,
/// auth nonces, agent wallets. Per-IP keys carry the IP as hash tag so they
/// spread over a Redis Cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeKeys;

impl NodeKeys {
    // ---- rate limits and bans ----

    /// String with a TTL: `ip` is banned while it exists.
    pub fn ip_ban(&self, ip: &impl std::fmt::Display) -> String {
        format!("cf:{{ip:{ip}}}:ban")
    }

    /// Pattern matching every ban key.
    pub fn ip_ban_pattern(&self) -> String {
        "cf:{ip:*}:ban".into()
    }

    /// GCRA state (theoretical arrival time, unix ms) of one client's
    /// requests to `route`; `ip` is the client's bucket (an IPv4 address or
    /// an IPv6 /64), so its ban and violations share the key's slot.
    pub fn ip_rate(&self, ip: &impl std::fmt::Display, route: &str) -> String {
        format!("cf:{{ip:{ip}}}:rl:{route}")
    }

    /// GCRA state of one wallet's requests to `route`.
    pub fn wallet_rate(&self, wallet: Address, route: &str) -> String {
        format!("cf:{{w:{}}}:rl:{route}", lower(wallet))
    }

    /// GCRA state of all clients' requests to `route` (its global ceiling).
    pub fn route_rate(&self, route: &str) -> String {
        format!("cf:{{rl:{route}}}:all")
    }

    /// Counter of `ip`'s rate-limit violations in the ban window.
    pub fn ip_violations(&self, ip: &impl std::fmt::Display) -> String {
        format!("cf:{{ip:{ip}}}:violations")
    }

    // ---- auth ----

    /// String with a TTL: a single-use signed message already used (by the
    /// sha256 of its form, signer and message, never of the signature bytes).
    pub fn signature_used(&self, digest_hex: &str) -> String {
        format!("cf:{{sig:{digest_hex}}}:used")
    }

    /// String with a TTL: unix seconds; sign-in tokens of `address` issued at
    /// or before it are revoked (`POST /admin/revocations`).
    pub fn jwt_not_before(&self, address: Address) -> String {
        format!("cf:{{auth:{}}}:nbf", lower(address))
    }

    /// String with a TTL: a live server nonce from `GET /auth/nonce`
    /// (32 lower-case hex digits), deleted when consumed.
    pub fn auth_nonce(&self, nonce_hex: &str) -> String {
        format!("cf:{{nonce:{nonce_hex}}}:open")
    }

    // ---- agent wallets ----

    /// Hash: agent wallet address → ECIES-encrypted private key (written
    /// before escrow became opt-in; read by `keys rotate` only).
    pub fn agent_wallets(&self) -> String {
        "cf:{node}:wallets".into()
    }

    /// String with a TTL: the sealed escrow copy of one agent wallet, kept
    /// only when `api.wallet_escrow_ttl_secs` is set.
    pub fn agent_wallet_escrow(&self, address: Address) -> String {
        format!("cf:{{node}}:wallet:{}", lower(address))
    }

    /// Pattern matching every escrowed agent wallet.
    pub fn agent_wallet_escrow_pattern(&self) -> String {
        "cf:{node}:wallet:*".into()
    }

    /// String: set by `keys rotate` once every stored secret is sealed; from
    /// then on a plaintext value is refused instead of read.
    pub fn crypto_migrated(&self) -> String {
        "cf:{node}:crypto:migrated".into()
    }
}

/// Keys of the balance ledger and the compute jobs (`src/ledger`,
/// `src/compute`). They share the hash tag `{ledger}`: a money movement
/// touches a balance, the wallet's ledger stream, a job and the job queue in
/// one atomic script, so they must sit in one Redis Cluster slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerKeys;

impl LedgerKeys {
    /// The prefix every ledger key starts with (scripts that walk the queue
    /// build job keys from it; those keys are in the same slot).
    pub const PREFIX: &'static str = "cf:{ledger}:";

    /// Hash: a wallet's balance (`avail`, `pend`, `dep`, `spent`, `debt`), USDC base units.
    pub fn balance(&self, wallet: Address) -> String {
        format!("{}bal:{}", Self::PREFIX, lower(wallet))
    }

    /// Stream: the wallet's ledger, append-only (credit, reversal, reserve, charge, refund).
    pub fn entries(&self, wallet: Address) -> String {
        format!("{}log:{}", Self::PREFIX, lower(wallet))
    }

    /// Hash: every credit ever made, by idempotency key (see [`LedgerKeys::deposit_credit`]).
    pub fn credits(&self) -> String {
        format!("{}credits", Self::PREFIX)
    }

    /// The idempotency key of a deposit: (chain id, tx hash, log index).
    pub fn deposit_credit(chain_id: u64, tx: B256, log_index: u64) -> String {
        format!("dep:{chain_id}:{tx}:{log_index}")
    }

    /// Sorted set: credited deposits of one chain not yet final (member
    /// `tx:log`, score = block), checked against the indexer until final.
    pub fn watch(&self, chain_id: u64) -> String {
        format!("{}watch:{chain_id}", Self::PREFIX)
    }

    /// String: the last block of one chain below the reorg window whose
    /// deposits the reconciler has credited.
    pub fn cursor(&self, chain_id: u64) -> String {
        format!("{}cursor:{chain_id}", Self::PREFIX)
    }

    /// Hash: one compute job.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", Self::PREFIX)
    }

    /// Sorted set: a wallet's job ids, score = creation time (unix ms).
    pub fn wallet_jobs(&self, wallet: Address) -> String {
        format!("{}jobs:{}", Self::PREFIX, lower(wallet))
    }

    /// Sorted set: jobs to run, score = due time (unix ms); a running job's
    /// score is its lease expiry, so a dead worker's job comes back.
    pub fn queue(&self) -> String {
        format!("{}queue", Self::PREFIX)
    }

    /// Hash: a wallet's usage on one UTC day (`<service>:n`, `:cost`, `:ms`).
    pub fn usage_day(&self, wallet: Address, day: u64) -> String {
        format!("{}use:{}:{day}", Self::PREFIX, lower(wallet))
    }

    /// Hash: a wallet's usage since the start.
    pub fn usage_all(&self, wallet: Address) -> String {
        format!("{}use:{}:all", Self::PREFIX, lower(wallet))
    }

    /// Hash: node-wide counters (requests, jobs by status, revenue).
    pub fn stats(&self) -> String {
        format!("{}stats", Self::PREFIX)
    }

    /// String: the random key webhook secrets are derived from (when
    /// `CHAINFRONT_COMPUTE_WEBHOOK_KEY` is not set).
    pub fn webhook_key(&self) -> String {
        format!("{}webhook-key", Self::PREFIX)
    }

    /// Hash: wallet → webhook-secret generation (bumped by a rotation).
    pub fn webhook_generations(&self) -> String {
        format!("{}webhook-gen", Self::PREFIX)
    }
}

/// Keys of the `storage` compute service: one hash tag per wallet.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageKeys;

impl StorageKeys {
    /// String (with the object's TTL): one stored object.
    pub fn object(&self, wallet: Address, key: &str) -> String {
        format!("cf:{{st:{}}}:o:{key}", lower(wallet))
    }

    /// Prefix of a wallet's object keys.
    pub fn object_prefix(&self, wallet: Address) -> String {
        format!("cf:{{st:{}}}:o:", lower(wallet))
    }

    /// Hash: object key → `<size>:<expires ms or 0>`, the wallet's index.
    pub fn index(&self, wallet: Address) -> String {
        format!("cf:{{st:{}}}:idx", lower(wallet))
    }
}

/// Addresses in keys are lower-case hex, so lookups need no checksum.
pub fn lower(a: Address) -> String {
    let mut s = String::with_capacity(42);
    push_lower(&mut s, a);
    s
}

/// Appends `a` as `0x` and 40 lowercase hex digits (what `{a:#x}` prints).
pub fn push_lower(out: &mut String, a: Address) {
    push_hex(out, a.as_slice());
}

/// Appends `bytes` (an address or a hash) as `0x` and lowercase hex digits,
/// without a temporary `String`.
fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    out.push_str("0x");
    if let Some(digits) = buf.get_mut(..2 * bytes.len())
        && alloy::hex::encode_to_slice(bytes, &mut *digits).is_ok()
    {
        out.push_str(std::str::from_utf8(digits).unwrap_or_default());
    } else {
        // Longer than a hash: not written per deposit.
        out.push_str(&alloy::hex::encode(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys and ids built by hand read exactly as `format!` wrote them
    /// (state written before must keep its keys).
    #[test]
    fn hand_built_keys_match_their_formatted_form() {
        let k = ChainKeys::new(8453);
        for a in [
            Address::ZERO,
            Address::repeat_byte(0xAB),
            "0x00000000000000000000000000000000000000F1"
                .parse()
                .expect("address"),
        ] {
            assert_eq!(lower(a), format!("{a:#x}"));
            assert_eq!(k.wallet_deposits(a), format!("cf:{{c8453}}:s:deps:{a:#x}"));
            assert_eq!(
                k.wallet_deposit_total(a),
                format!("cf:{{c8453}}:s:deptotal:{a:#x}")
            );
        }
        for (tx, i) in [(B256::ZERO, 0), (B256::repeat_byte(0x0F), u64::MAX)] {
            assert_eq!(ChainKeys::deposit_id(tx, i), format!("{tx}:{i}"));
        }
        assert_eq!(k.deposits(), "cf:{c8453}:s:deposits");
    }

    #[test]
    fn keys_share_one_hash_tag_per_chain() {
        let k = ChainKeys::new(8453);
        let all = [
            k.checkpoint(),
            k.block_hashes(),
            k.undo(5),
            k.leader(),
            k.vm(U256::from(42)),
            k.owner_vms(Address::repeat_byte(0xAB)),
            k.tier(3),
            k.market(FixedBytes::repeat_byte(1)),
            k.deposits(),
            k.wallet_deposit_total(Address::ZERO),
        ];
        for key in &all {
            assert!(key.starts_with("cf:{c8453}:"), "{key}");
        }
        assert_eq!(k.vm(U256::from(42)), "cf:{c8453}:s:vm:42");
        assert_eq!(
            k.owner_vms(Address::repeat_byte(0xAB)),
            format!("cf:{{c8453}}:s:owner:0x{}:vms", "ab".repeat(20))
        );
        assert!(
            k.checkpoint().contains(":m:"),
            "bookkeeping is outside the state namespace"
        );
        assert_ne!(
            ChainKeys::new(1).vm(U256::from(1)),
            ChainKeys::new(2).vm(U256::from(1))
        );
    }
}
