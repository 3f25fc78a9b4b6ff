//! The one atomic Redis commit. A batch of blocks' effects, the undo record of
//! a block inside the reorg window, the remembered block hashes and the
//! checkpoint all go to Redis in a single Lua script call, after the script
//! checks this process still holds the leader's fencing token. A crash before
//! the call changes nothing; after it, everything is there.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use crate::conn::RedisConn;
use alloy::primitives::{B256, U256};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::apply::Op;
use crate::keys::ChainKeys;
use crate::{Error, Result};

/// Runs a list of commands after three checks, all inside the one atomic
/// script call.
///
/// KEYS[1] is the leader key, KEYS[2] the checkpoint, KEYS[3] the wipe
/// tombstone, KEYS[4..] every key the commands write (declared, so the
/// script is valid on Redis Cluster and behind proxies that check keys).
///
/// ARGV[1] is the expected fencing token ('' skips the check). ARGV[2] is
/// the checkpoint the commit builds on as `<number>:<hash>`: `*` skips the
/// check, empty means "no checkpoint yet". Number *and* hash are compared, so
/// a checkpoint at the same height on another branch (Redis lost a revert
/// and a re-apply) is a mismatch. ARGV[3] is `commit` (refused while the
/// tombstone exists) or `wipe`. ARGV[4] is the number of commands; then per
/// command: its argument count after the key, the key's index in KEYS, the
/// command name and the arguments.
const COMMIT_LUA: &str = r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lost leadership')
end
if ARGV[3] == 'commit' and redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('WIPING an interrupted reindex must finish first')
end
if ARGV[2] ~= '*' then
  local cur = redis.call('HMGET', KEYS[2], 'number', 'hash')
  local now = ''
  if cur[1] then now = cur[1] .. ':' .. (cur[2] or '') end
  if now ~= ARGV[2] then
    return redis.error_reply('STALE checkpoint moved')
  end
end
local i = 5
local n = tonumber(ARGV[4])
for c = 1, n do
  local argc = tonumber(ARGV[i])
  redis.call(ARGV[i + 2], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + argc))
  i = i + 3 + argc
end
return n
";

/// What a script call is for.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Chain state: refused while a wipe tombstone exists.
    Commit,
    /// A step of the wipe itself.
    Wipe,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Commit => "commit",
            Mode::Wipe => "wipe",
        }
    }
}

/// What a script call checks the checkpoint against.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// No check (the wipe).
    Any,
    /// Exactly this checkpoint (`None`: no checkpoint).
    Exactly(Option<Checkpoint>),
}

impl Expect {
    fn arg(self) -> String {
        match self {
            Expect::Any => "*".into(),
            Expect::Exactly(None) => String::new(),
            Expect::Exactly(Some(cp)) => format!("{}:{}", cp.number, cp.hash),
        }
    }
}

/// The last committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Block number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
}

/// One commit: the effects of blocks `..=to`, ending at block `to` with hash
/// `to_hash`.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Last block covered.
    pub to: u64,
    /// Its hash.
    pub to_hash: B256,
    /// The effects, in chain order.
    pub ops: Vec<Op>,
    /// Keep an undo record for this commit (a single block in the reorg window).
    pub undo: bool,
}

/// A commit sent to Redis whose answer has not been read yet
/// ([`Store::start_commit`], [`Store::settle`]).
#[must_use = "a sent commit must be settled"]
pub struct Sent {
    reply: tokio::task::JoinHandle<redis::RedisResult<i64>>,
    expect: Expect,
}

/// How to restore the keys one block touched: for every (key, field or
/// member) the block wrote, its value before the block. Sized by the block's
/// writes, not by the collections they touch. Written borrowing from the
/// commit's ops; read back owned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct UndoRecord<'a> {
    /// The checkpoint before the block.
    prev_number: u64,
    prev_hash: B256,
    /// What to put back, applied in any order (each entry is a pre-block value).
    restore: Vec<Restore<'a>>,
}

/// One pre-block value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
enum Restore<'a> {
    /// A hash field: its value, or absent.
    Field(Cow<'a, str>, Cow<'a, str>, Option<Cow<'a, str>>),
    /// A set member: present or not.
    Member(Cow<'a, str>, Cow<'a, str>, bool),
    /// A sorted-set member: its score, or absent.
    Scored(Cow<'a, str>, Cow<'a, str>, Option<Cow<'a, str>>),
    /// A string key: its value, or absent.
    Str(Cow<'a, str>, Option<Cow<'a, str>>),
}

impl Restore<'_> {
    fn command(&self) -> Cmd {
        match self {
            Restore::Field(k, f, Some(v)) => {
                cmd(&[b"HSET", k.as_bytes(), f.as_bytes(), v.as_bytes()])
            }
            Restore::Field(k, f, None) => cmd(&[b"HDEL", k.as_bytes(), f.as_bytes()]),
            Restore::Member(k, m, true) => cmd(&[b"SADD", k.as_bytes(), m.as_bytes()]),
            Restore::Member(k, m, false) => cmd(&[b"SREM", k.as_bytes(), m.as_bytes()]),
            Restore::Scored(k, m, Some(score)) => {
                cmd(&[b"ZADD", k.as_bytes(), score.as_bytes(), m.as_bytes()])
            }
            Restore::Scored(k, m, None) => cmd(&[b"ZREM", k.as_bytes(), m.as_bytes()]),
            Restore::Str(k, Some(v)) => cmd(&[b"SET", k.as_bytes(), v.as_bytes()]),
            Restore::Str(k, None) => cmd(&[b"DEL", k.as_bytes()]),
        }
    }
}

/// One Redis command, its arguments back to back in one buffer (a commit
/// carries hundreds of thousands of arguments: one allocation each was a
/// large part of the follower's CPU).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cmd {
    data: Vec<u8>,
    /// Where each argument ends in `data`.
    ends: Vec<usize>,
}

impl Cmd {
    fn with_capacity(args: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(args),
        }
    }

    fn push(&mut self, arg: &[u8]) {
        self.data.extend_from_slice(arg);
        self.ends.push(self.data.len());
    }

    /// Number of arguments (the command name and the key included).
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Argument `i` (0 is the command name, 1 the key).
    fn arg(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let a = &self.data[start..end];
            start = end;
            a
        })
    }
}

/// Most arguments in one merged command; Lua's `unpack` in the commit script
/// refuses more than about 8,000 values.
const MAX_ARGS: usize = 2_000;

/// What a write is, for merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HSet,
    SAdd,
    SRem,
    ZAdd,
    /// A command that is never merged.
    Single(&'static [u8]),
}

impl Kind {
    fn name(self) -> &'static [u8] {
        match self {
            Kind::HSet => b"HSET",
            Kind::SAdd => b"SADD",
            Kind::SRem => b"SREM",
            Kind::ZAdd => b"ZADD",
            Kind::Single(name) => name,
        }
    }
}

/// A commit's writes as few commands as possible: per key, in op order,
/// consecutive writes of the same kind become one variadic command (`HSET k
/// f1 v1 f2 v2`, `ZADD k s1 m1 s2 m2`, ...). Writes to different keys commute
/// and each key keeps its own order, so the result equals running the ops
/// one by one — with one command per key and kind instead of one per event.
#[derive(Default)]
struct Batch {
    /// Keys in first-write order (a deterministic command order).
    order: Vec<String>,
    per_key: FastMap<String, Vec<(Kind, Cmd)>>,
}

impl Batch {
    /// Appends a write of `kind` to `key` with its `n` arguments.
    fn push<'b>(&mut self, key: &str, kind: Kind, n: usize, args: impl Iterator<Item = &'b [u8]>) {
        let cmds = match self.per_key.get_mut(key) {
            Some(c) => c,
            None => {
                self.order.push(key.to_owned());
                self.per_key.entry(key.to_owned()).or_default()
            }
        };
        if let Some((last, cmd)) = cmds.last_mut()
            && *last == kind
            && !matches!(kind, Kind::Single(_))
            && cmd.len() + n <= MAX_ARGS
        {
            for a in args {
                cmd.push(a);
            }
            return;
        }
        let mut cmd = Cmd::with_capacity(2 + n, 64 * (2 + n));
        cmd.push(kind.name());
        cmd.push(key.as_bytes());
        for a in args {
            cmd.push(a);
        }
        cmds.push((kind, cmd));
    }

    fn into_commands(mut self) -> Vec<Cmd> {
        let mut out = Vec::with_capacity(self.order.len() + 6);
        for key in &self.order {
            if let Some(cmds) = self.per_key.remove(key) {
                out.extend(cmds.into_iter().map(|(_, c)| c));
            }
        }
        out
    }
}

fn cmd(parts: &[&[u8]]) -> Cmd {
    let mut c = Cmd::with_capacity(parts.len(), parts.iter().map(|p| p.len()).sum());
    for p in parts {
        c.push(p);
    }
    c
}

/// Redis access for one chain's indexer state.
pub struct Store {
    conn: RedisConn,
    keys: ChainKeys,
    /// The reorg window: undo records and hashes are kept this many blocks.
    window: u64,
    /// Fencing token; empty when running without a leader lock.
    token: String,
    /// The checkpoint this process last read or wrote (`None`: not read
    /// yet; the first commit reads it, so every commit checks it).
    last: Option<Option<Checkpoint>>,
    /// A script call was refused or its outcome is unknown: commits are
    /// refused ([`Error::StaleCheckpoint`]) until the caller reads the
    /// checkpoint again ([`Store::checkpoint`]) and decides what to commit
    /// on top of what Redis really holds.
    reread: bool,
    /// The block numbers `m:hashes` holds (each may have an undo record);
    /// `None`: unknown, read with one `HKEYS` before the next commit. Pruning
    /// deletes every entry that fell out of the window from this set, so
    /// nothing is left behind when the follower jumps ahead (a backfill after
    /// falling behind) or the window shrinks.
    remembered: Option<BTreeSet<u64>>,
    /// The running totals the last commit wrote, at their values in `last`.
    /// The next commit adds to these without reading them back: only
    /// commits write totals, and the commit's checkpoint check (number,
    /// hash and fencing token) proves Redis still holds `last` and so
    /// these values. Cleared whenever `last` is re-read or may be wrong.
    totals: Totals,
    script: Script,
    /// Resolves when the last script call sent has been answered (or its
    /// task ended): the next call waits for it before it is sent, so calls
    /// reach Redis in the order they were made even though each runs on a
    /// task of its own.
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Clone for Store {
    /// Another handle on the same chain's state that believes what this one
    /// believes, with no call in flight (its calls are not ordered after
    /// this one's: each is checked by the script on its own).
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            window: self.window,
            token: self.token.clone(),
            last: self.last,
            reread: self.reread,
            remembered: self.remembered.clone(),
            totals: self.totals.clone(),
            script: self.script.clone(),
            previous: None,
        }
    }
}

impl Store {
    /// A store for `keys` on `conn`.
    pub fn new(conn: RedisConn, keys: ChainKeys, window: u64) -> Self {
        Self {
            conn,
            keys,
            window: window.max(1),
            token: String::new(),
            last: None,
            reread: false,
            remembered: None,
            totals: Totals::default(),
            script: Script::new(COMMIT_LUA),
            previous: None,
        }
    }

    /// Every later commit checks this fencing token first.
    pub fn set_fencing_token(&mut self, token: String) {
        self.token = token;
    }

    /// The key builder.
    pub fn keys(&self) -> &ChainKeys {
        &self.keys
    }

    /// The connection (for the leader lock and readers).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The last committed block, if any.
    pub async fn checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        let (number, hash): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.checkpoint())
            .arg("number")
            .arg("hash")
            .query_async(&mut self.conn)
            .await?;
        let cp = match (number, hash) {
            (Some(number), Some(hash)) => Some(Checkpoint {
                number,
                hash: hash
                    .parse()
                    .map_err(|_| Error::Corrupt(format!("checkpoint hash `{hash}`")))?,
            }),
            (None, None) => None,
            (n, h) => {
                return Err(Error::Corrupt(format!(
                    "checkpoint has number {n:?} but hash {h:?}"
                )));
            }
        };
        self.last = Some(cp);
        self.reread = false;
        self.totals.clear();
        Ok(cp)
    }

    /// The checkpoint the next commit builds on: the one last read or
    /// written (Redis's on first use). After a refused or unknown outcome,
    /// none until the caller re-reads it.
    async fn base(&mut self) -> Result<Option<Checkpoint>> {
        if self.reread {
            return Err(Error::StaleCheckpoint);
        }
        match self.last {
            Some(known) => Ok(known),
            None => self.checkpoint().await,
        }
    }

    /// The remembered hash of block `n`, if it is inside the window.
    pub async fn block_hash(&mut self, n: u64) -> Result<Option<B256>> {
        let h: Option<String> = self.conn.hget(self.keys.block_hashes(), n).await?;
        h.map(|h| {
            h.parse()
                .map_err(|_| Error::Corrupt(format!("block hash `{h}`")))
        })
        .transpose()
    }

    /// Commits `c` atomically.
    pub async fn commit(&mut self, c: Commit) -> Result<()> {
        if c.undo {
            return self
                .commit_window(vec![WindowBlock {
                    number: c.to,
                    hash: c.to_hash,
                    ops: c.ops,
                }])
                .await;
        }
        let sent = self.start_commit(c).await?;
        self.settle(sent).await
    }

    /// Sends commit `c` (no undo record) and returns without waiting for
    /// Redis's answer, so the caller can prepare the next commit meanwhile;
    /// [`Store::settle`] then waits for it. The store already builds on
    /// `c`: the next commit's script checks Redis's checkpoint is `c`'s
    /// end, so if `c` is refused or lost, the next one is refused too, and
    /// `settle` makes the store re-read what Redis holds. Settle commits in
    /// the order they were started, and read nothing from the store's
    /// state in between except through further commits.
    pub async fn start_commit(&mut self, c: Commit) -> Result<Sent> {
        debug_assert!(!c.undo, "window commits go through commit_window");
        let prepared = async {
            let prev = self.base().await?;
            let totals = self.resolve_totals(&c.ops).await?;
            let mut cmds = writes(c.ops.iter(), &totals);
            self.remember(&mut cmds, c.to, c.to_hash);
            self.start(cmds, prev, &[c.to], (c.to, c.to_hash), totals)
                .await
        }
        .await;
        if prepared.is_err() {
            self.forget();
        }
        prepared
    }

    /// Commits consecutive blocks inside the reorg window in one atomic step,
    /// each with its own undo record. The values the blocks overwrite are read
    /// once; each block's pre-block values follow by replaying the blocks
    /// before it in memory, so the batch costs two round trips, not two per
    /// block.
    pub async fn commit_window(&mut self, blocks: Vec<WindowBlock>) -> Result<()> {
        let Some(last) = blocks.last() else {
            return Ok(());
        };
        let (to, to_hash) = (last.number, last.hash);
        // The commit script checks Redis still holds this checkpoint.
        let base = self.base().await?;
        let mut table = SlotTable::new(&blocks);
        let read = self.capture_refs(&table.slots).await?;
        table.values = read.into_iter().map(|v| v.map(Cow::Owned)).collect();
        let mut prev = base;
        let mut undo_cmds = Vec::with_capacity(blocks.len() * 2);
        for (i, b) in blocks.iter().enumerate() {
            let restore: Vec<Restore<'_>> = table.block_slots[i]
                .iter()
                .map(|&s| table.restore(s))
                .collect();
            let json = serde_json::to_vec(&UndoRecord {
                prev_number: prev.map(|p| p.number).unwrap_or_default(),
                prev_hash: prev.map(|p| p.hash).unwrap_or_default(),
                restore,
            })
            .map_err(|e| Error::Corrupt(e.to_string()))?;
            table.replay(&b.ops)?;
            undo_cmds.push(cmd(&[b"SET", self.keys.undo(b.number).as_bytes(), &json]));
            self.remember(&mut undo_cmds, b.number, b.hash);
            prev = Some(Checkpoint {
                number: b.number,
                hash: b.hash,
            });
        }
        // Totals end at their replayed values.
        let totals = table.totals(blocks.iter().flat_map(|b| &b.ops))?;
        drop(table);
        let mut cmds = writes(blocks.iter().flat_map(|b| &b.ops), &totals);
        cmds.extend(undo_cmds);
        let numbers: Vec<u64> = blocks.iter().map(|b| b.number).collect();
        let sent = self
            .start(cmds, base, &numbers, (to, to_hash), totals)
            .await?;
        self.settle(sent).await
    }

    /// Remembers block `number`'s hash (for reorg detection).
    fn remember(&self, cmds: &mut Vec<Cmd>, number: u64, hash: B256) {
        cmds.push(cmd(&[
            b"HSET",
            self.keys.block_hashes().as_bytes(),
            number.to_string().as_bytes(),
            hash.to_string().as_bytes(),
        ]));
    }

    /// The block numbers `m:hashes` holds now.
    async fn remembered(&mut self) -> Result<BTreeSet<u64>> {
        if let Some(set) = &self.remembered {
            return Ok(set.clone());
        }
        let fields: Vec<String> = self.conn.hkeys(self.keys.block_hashes()).await?;
        let set = fields
            .iter()
            .map(|f| {
                f.parse::<u64>()
                    .map_err(|_| Error::Corrupt(format!("block hashes field `{f}`")))
            })
            .collect::<Result<BTreeSet<u64>>>()?;
        self.remembered = Some(set.clone());
        Ok(set)
    }

    /// Prunes everything that falls out of the window once the checkpoint is
    /// `to` (hashes and undo records of blocks `<= to - window`: after this
    /// commit `m:hashes` holds only blocks in `(to - window, to]`), moves the
    /// checkpoint and sends everything as one script call, checked against
    /// `base`; the store builds on it from now on (see
    /// [`Store::start_commit`]). `new` are the blocks whose hashes `cmds`
    /// remember; `totals` the values `cmds` leave the totals they write at.
    async fn start(
        &mut self,
        mut cmds: Vec<Cmd>,
        base: Option<Checkpoint>,
        new: &[u64],
        (to, to_hash): (u64, B256),
        totals: Totals,
    ) -> Result<Sent> {
        let mut remembered = self.remembered().await?;
        remembered.extend(new.iter().copied());
        if let Some(floor) = to.checked_sub(self.window) {
            let old: Vec<u64> = remembered.range(..=floor).copied().collect();
            if !old.is_empty() {
                let hashes = self.keys.block_hashes();
                for chunk in old.chunks(MAX_ARGS) {
                    let mut hdel = cmd(&[b"HDEL", hashes.as_bytes()]);
                    let mut digits = itoa::Buffer::new();
                    for n in chunk {
                        hdel.push(digits.format(*n).as_bytes());
                    }
                    cmds.push(hdel);
                }
                for n in &old {
                    cmds.push(cmd(&[b"DEL", self.keys.undo(*n).as_bytes()]));
                    remembered.remove(n);
                }
            }
        }
        cmds.push(cmd(&[
            b"HSET",
            self.keys.checkpoint().as_bytes(),
            b"number",
            to.to_string().as_bytes(),
            b"hash",
            to_hash.to_string().as_bytes(),
        ]));
        let sent = self.send(cmds, Expect::Exactly(base), Mode::Commit)?;
        self.remembered = Some(remembered);
        self.totals = totals;
        self.last = Some(Some(Checkpoint {
            number: to,
            hash: to_hash,
        }));
        Ok(sent)
    }

    /// Waits for a commit [`Store::start_commit`] sent. On a refusal or an
    /// unknown outcome the store forgets what it built on (see
    /// [`Store::forget`]).
    pub async fn settle(&mut self, sent: Sent) -> Result<()> {
        let res = match sent.reply.await {
            Ok(res) => res,
            // The task sending it was cancelled: the outcome is unknown.
            Err(e) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "commit task ended without an answer",
                e.to_string(),
            ))),
        };
        self.outcome(res, sent.expect)
    }

    /// What the store believes Redis holds may be wrong: re-read it before
    /// the next commit.
    fn forget(&mut self) {
        self.reread = true;
        self.remembered = None;
        self.totals.clear();
    }

    /// Undoes the committed blocks above `number`, newest first, each in its
    /// own atomic step. Fails if any of them has no undo record (the reorg is
    /// deeper than the window).
    pub async fn revert_to(&mut self, number: u64) -> Result<()> {
        while let Some(cp) = self.checkpoint().await?
            && cp.number > number
        {
            let raw: Option<String> = self.conn.get(self.keys.undo(cp.number)).await?;
            let Some(raw) = raw else {
                return Err(Error::ReorgTooDeep {
                    block: cp.number,
                    window: self.window,
                });
            };
            let record: UndoRecord =
                serde_json::from_str(&raw).map_err(|e| Error::Corrupt(e.to_string()))?;
            let mut cmds: Vec<Cmd> = record.restore.iter().map(Restore::command).collect();
            cmds.push(cmd(&[b"DEL", self.keys.undo(cp.number).as_bytes()]));
            cmds.push(cmd(&[
                b"HDEL",
                self.keys.block_hashes().as_bytes(),
                cp.number.to_string().as_bytes(),
            ]));
            let prev = (!(record.prev_hash == B256::ZERO && record.prev_number == 0)).then_some(
                Checkpoint {
                    number: record.prev_number,
                    hash: record.prev_hash,
                },
            );
            match prev {
                None => cmds.push(cmd(&[b"DEL", self.keys.checkpoint().as_bytes()])),
                Some(p) => cmds.push(cmd(&[
                    b"HSET",
                    self.keys.checkpoint().as_bytes(),
                    b"number",
                    p.number.to_string().as_bytes(),
                    b"hash",
                    p.hash.to_string().as_bytes(),
                ])),
            }
            self.run(cmds, Expect::Exactly(Some(cp)), Mode::Commit)
                .await?;
            if let Some(set) = &mut self.remembered {
                set.remove(&cp.number);
            }
            self.last = Some(prev);
        }
        Ok(())
    }

    /// Deletes this chain's derived state, checkpoint, hashes and undo
    /// records (not the leader lock), for `reindex`. The caller holds the
    /// lock. A tombstone is written first, in the same atomic step that
    /// deletes the checkpoint, and removed last: a wipe cut short (Ctrl-C,
    /// OOM, a deploy timeout) leaves the tombstone, no commit runs while it
    /// exists, and the next start finishes the wipe
    /// ([`Store::finish_interrupted_wipe`]) instead of resuming over half
    /// deleted state.
    pub async fn wipe(&mut self) -> Result<()> {
        let (tombstone, checkpoint) = (self.keys.wipe(), self.keys.checkpoint());
        self.run(
            vec![
                cmd(&[b"SET", tombstone.as_bytes(), b"1"]),
                cmd(&[b"DEL", checkpoint.as_bytes()]),
            ],
            Expect::Any,
            Mode::Wipe,
        )
        .await?;
        self.last = None;
        self.remembered = None;
        self.totals.clear();
        let mut keys = scan(&mut self.conn, &self.keys.state_pattern()).await?;
        keys.extend(scan(&mut self.conn, &self.keys.undo_pattern()).await?);
        for chunk in keys.chunks(500) {
            let cmds = chunk.iter().map(|k| cmd(&[b"DEL", k.as_bytes()])).collect();
            self.run(cmds, Expect::Any, Mode::Wipe).await?;
        }
        self.run(
            vec![
                cmd(&[b"DEL", self.keys.block_hashes().as_bytes()]),
                cmd(&[b"DEL", tombstone.as_bytes()]),
            ],
            Expect::Any,
            Mode::Wipe,
        )
        .await?;
        self.last = Some(None);
        self.reread = false;
        self.remembered = Some(BTreeSet::new());
        Ok(())
    }

    /// Finishes a wipe an interrupted `reindex` left behind (its tombstone
    /// is still there). Returns whether there was one. Every start runs this
    /// before following.
    pub async fn finish_interrupted_wipe(&mut self) -> Result<bool> {
        let pending: bool = self.conn.exists(self.keys.wipe()).await?;
        if pending {
            tracing::warn!(target: "chainfront::indexer", chain_id = self.keys.chain_id(), "an interrupted reindex left a wipe tombstone; finishing the wipe before indexing");
            self.wipe().await?;
        }
        Ok(pending)
    }

    async fn run(&mut self, cmds: Vec<Cmd>, expect: Expect, mode: Mode) -> Result<()> {
        let sent = self.send(cmds, expect, mode)?;
        self.settle(sent).await
    }

    /// Sends `cmds` as one call of the commit script, on a task of its own
    /// (building the call's arguments runs there too); [`Store::settle`]
    /// reads its answer.
    fn send(&mut self, cmds: Vec<Cmd>, expect: Expect, mode: Mode) -> Result<Sent> {
        if cmds.iter().any(|c| c.len() < 2) {
            return Err(Error::Corrupt("a store command without a key".into()));
        }
        let script = self.script.clone();
        let mut conn = self.conn.clone();
        let fixed = [self.keys.leader(), self.keys.checkpoint(), self.keys.wipe()];
        let token = self.token.clone();
        let previous = self.previous.take();
        let (answered, next) = tokio::sync::oneshot::channel();
        self.previous = Some(next);
        let reply = tokio::spawn(async move {
            // Every key the commands write is declared; commands refer to it
            // by its index in KEYS.
            let mut keys: Vec<&[u8]> = fixed.iter().map(|k| k.as_bytes()).collect();
            let mut index: FastMap<&[u8], usize> =
                FastMap::with_capacity_and_hasher(cmds.len(), Default::default());
            let mut positions = Vec::with_capacity(cmds.len());
            let (mut argc, mut bytes) = (0, 0);
            for c in &cmds {
                let key = c.arg(1);
                let i = *index.entry(key).or_insert_with(|| {
                    keys.push(key);
                    keys.len()
                });
                positions.push(i);
                argc += c.len() + 1;
                bytes += c.data.len() + 12 * c.len();
            }
            // One buffer for the whole call (no allocation per argument).
            let mut call = redis::Cmd::with_capacity(argc + keys.len() + 7, bytes + 256);
            call.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
            for k in &keys {
                call.arg(*k);
            }
            call.arg(token.as_bytes())
                .arg(expect.arg())
                .arg(mode.arg())
                .arg(cmds.len());
            for (c, i) in cmds.iter().zip(positions) {
                call.arg(c.len() - 2).arg(i).arg(c.arg(0));
                for a in c.args().skip(2) {
                    call.arg(a);
                }
            }
            drop(index);
            drop(keys);
            drop(cmds);
            // Sent only once the call before it is answered (built before).
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let res = match call.query_async::<i64>(&mut conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    match script.prepare_invoke().load_async(&mut conn).await {
                        Ok(_) => call.query_async::<i64>(&mut conn).await,
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            let _ = answered.send(());
            res
        });
        Ok(Sent { reply, expect })
    }

    /// A script call's answer, as the store's error (and its state: after a
    /// refusal or an unknown outcome what Redis holds must be re-read before
    /// the next commit).
    fn outcome(&mut self, res: redis::RedisResult<i64>, expect: Expect) -> Result<()> {
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                self.forget();
                let text = e.to_string();
                if text.contains("FENCED") {
                    tracing::warn!(target: "chainfront::indexer", chain_id = self.keys.chain_id(), "commit refused: this process no longer holds the leader's fencing token");
                    Err(Error::Fenced)
                } else if text.contains("STALE") {
                    tracing::warn!(target: "chainfront::indexer", chain_id = self.keys.chain_id(), expected = %expect.arg(), "commit refused: the checkpoint in Redis is not the one this commit builds on");
                    Err(Error::StaleCheckpoint)
                } else if text.contains("WIPING") {
                    Err(Error::WipePending)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// The final value of every total the ops add to: the values the last
    /// commit left (see [`Store::totals`]) and the others read in one round
    /// trip (none when all are known), additions replayed.
    async fn resolve_totals(&mut self, ops: &[Op]) -> Result<Totals> {
        // What the ops add to each total (one parse and one addition per
        // total, not per op).
        let mut added: FastMap<(&str, &Option<String>), U256> = FastMap::default();
        for op in ops {
            if let Op::AddU256 { key, field, amount } = op {
                let sum = added.entry((key, field)).or_default();
                *sum = sum
                    .checked_add(*amount)
                    .ok_or_else(|| Error::Corrupt(format!("total {key} overflows")))?;
            }
        }
        let unknown: BTreeSet<SlotRef<'_>> = added
            .keys()
            .filter(|(key, field)| !self.totals.contains_key(&total_id(key, field)))
            .map(|(key, field)| SlotRef::total(key, field))
            .collect();
        let unknown: Vec<SlotRef<'_>> = unknown.into_iter().collect();
        let values = self.capture_refs(&unknown).await?;
        let read: FastMap<SlotRef<'_>, Option<String>> = unknown.into_iter().zip(values).collect();
        let mut totals = Totals::with_capacity_and_hasher(added.len(), Default::default());
        for ((key, field), sum) in added {
            let id = total_id(key, field);
            let start = match self.totals.get(&id) {
                Some(known) => *known,
                None => parse_total(
                    key,
                    read.get(&SlotRef::total(key, field))
                        .and_then(|v| v.as_deref()),
                )?,
            };
            let end = start
                .checked_add(sum)
                .ok_or_else(|| Error::Corrupt(format!("total {key} overflows")))?;
            totals.insert(id, end);
        }
        Ok(totals)
    }

    /// Current values of `slots` (sorted, distinct; a set member: `Some("1")`
    /// when present), in the same order, in one pipelined round trip.
    async fn capture_refs(&mut self, slots: &[SlotRef<'_>]) -> Result<Vec<Option<String>>> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let runs: Vec<&[SlotRef<'_>]> = slots
            .chunk_by(|a, b| a.read_together(b))
            .flat_map(|run| run.chunks(MAX_ARGS))
            .collect();
        let mut pipe = redis::pipe();
        for run in &runs {
            let (name, key) = run[0].read_command();
            pipe.cmd(name).arg(key);
            for slot in *run {
                if let Some(m) = slot.member() {
                    pipe.arg(m);
                }
            }
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn).await?;
        let corrupt = |e: String| Error::Corrupt(format!("undo capture: {e}"));
        if replies.len() != runs.len() {
            return Err(corrupt(format!(
                "{} replies to {} reads",
                replies.len(),
                runs.len()
            )));
        }
        let mut out = Vec::with_capacity(slots.len());
        for (run, reply) in runs.into_iter().zip(&replies) {
            let values: &[redis::Value] = match (&run[0], reply) {
                (SlotRef::Str(_), v) => std::slice::from_ref(v),
                (_, redis::Value::Array(items)) => items,
                (_, v) => return Err(corrupt(format!("unexpected reply {v:?}"))),
            };
            if values.len() != run.len() {
                return Err(corrupt(format!(
                    "{} values for {} slots",
                    values.len(),
                    run.len()
                )));
            }
            for (slot, v) in run.iter().zip(values) {
                out.push(match (slot, v) {
                    (_, redis::Value::Nil) => None,
                    (SlotRef::Member(..), v) => redis::from_redis_value_ref::<bool>(v)
                        .map_err(|e| corrupt(e.to_string()))?
                        .then(|| "1".to_owned()),
                    (_, v) => Some(
                        redis::from_redis_value_ref::<String>(v)
                            .map_err(|e| corrupt(e.to_string()))?,
                    ),
                });
            }
        }
        Ok(out)
    }
}

/// A block inside the reorg window, committed with its own undo record.
#[derive(Debug, Clone)]
pub struct WindowBlock {
    /// Block number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its effects, in log order.
    pub ops: Vec<Op>,
}

/// One value an op writes (what an undo record restores), borrowed from
/// the ops. Ordered by kind, key and member, so sorted slots of one key and
/// kind are read by one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SlotRef<'a> {
    Field(&'a str, &'a str),
    Member(&'a str, &'a str),
    Scored(&'a str, &'a str),
    Str(&'a str),
}

impl<'a> SlotRef<'a> {
    /// Whether `self` and `other` are read by one command (fields, members
    /// or scores of the same key).
    fn read_together(&self, other: &SlotRef<'_>) -> bool {
        match (self, other) {
            (SlotRef::Field(a, _), SlotRef::Field(b, _))
            | (SlotRef::Member(a, _), SlotRef::Member(b, _))
            | (SlotRef::Scored(a, _), SlotRef::Scored(b, _)) => a == b,
            _ => false,
        }
    }

    /// The command that reads slots like this one, and its key.
    fn read_command(&self) -> (&'static str, &'a str) {
        match *self {
            SlotRef::Field(k, _) => ("HMGET", k),
            SlotRef::Member(k, _) => ("SMISMEMBER", k),
            SlotRef::Scored(k, _) => ("ZMSCORE", k),
            SlotRef::Str(k) => ("GET", k),
        }
    }

    /// The field or member, if the slot has one.
    fn member(&self) -> Option<&'a str> {
        match *self {
            SlotRef::Field(_, m) | SlotRef::Member(_, m) | SlotRef::Scored(_, m) => Some(m),
            SlotRef::Str(_) => None,
        }
    }

    fn total(key: &'a str, field: &'a Option<String>) -> Self {
        match field {
            Some(f) => SlotRef::Field(key, f),
            None => SlotRef::Str(key),
        }
    }

    /// Calls `f` with each slot `op` writes, in order.
    fn each_of(op: &'a Op, mut f: impl FnMut(SlotRef<'a>)) {
        match op {
            Op::HSet { key, fields } => {
                for (field, _) in fields {
                    f(SlotRef::Field(key, field));
                }
            }
            Op::HIncr { key, field, .. } => f(SlotRef::Field(key, field)),
            Op::SAdd { key, member } | Op::SRem { key, member } => f(SlotRef::Member(key, member)),
            Op::ZAdd { key, member, .. } => f(SlotRef::Scored(key, member)),
            Op::Set { key, .. } => f(SlotRef::Str(key)),
            Op::AddU256 { key, field, .. } => f(SlotRef::total(key, field)),
        }
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A window commit's slots and their values as the blocks are replayed in
/// memory: every distinct slot once (sorted, the order they are read in),
/// each block's own slots (sorted, the order of its undo record), and the
/// current value of each — borrowed from the ops where an op wrote it.
struct SlotTable<'a> {
    slots: Vec<SlotRef<'a>>,
    index: FastMap<SlotRef<'a>, usize>,
    block_slots: Vec<Vec<usize>>,
    values: Vec<Option<Cow<'a, str>>>,
    /// Totals added to so far, parsed (one parse per total, not per op).
    totals: FastMap<usize, U256>,
}

impl<'a> SlotTable<'a> {
    fn new(blocks: &'a [WindowBlock]) -> Self {
        let mut all: Vec<SlotRef<'a>> = Vec::new();
        let mut per_block: Vec<Vec<SlotRef<'a>>> = Vec::with_capacity(blocks.len());
        for b in blocks {
            let mut mine = Vec::new();
            for op in &b.ops {
                SlotRef::each_of(op, |s| mine.push(s));
            }
            mine.sort_unstable();
            mine.dedup();
            all.extend_from_slice(&mine);
            per_block.push(mine);
        }
        all.sort_unstable();
        all.dedup();
        let mut index = FastMap::with_capacity_and_hasher(all.len(), Default::default());
        for (i, s) in all.iter().enumerate() {
            index.insert(*s, i);
        }
        let block_slots = per_block
            .into_iter()
            .map(|mine| mine.iter().map(|s| index[s]).collect())
            .collect();
        Self {
            values: vec![None; all.len()],
            slots: all,
            index,
            block_slots,
            totals: FastMap::default(),
        }
    }

    /// Slot `i`'s current value.
    fn value(&self, i: usize) -> Option<Cow<'a, str>> {
        match self.totals.get(&i) {
            Some(t) => Some(Cow::Owned(t.to_string())),
            None => self.values[i].clone(),
        }
    }

    /// The undo entry that puts slot `i`'s current value back.
    fn restore(&self, i: usize) -> Restore<'a> {
        let before = self.value(i);
        match self.slots[i] {
            SlotRef::Field(k, f) => Restore::Field(k.into(), f.into(), before),
            SlotRef::Member(k, m) => Restore::Member(k.into(), m.into(), before.is_some()),
            SlotRef::Scored(k, m) => Restore::Scored(k.into(), m.into(), before),
            SlotRef::Str(k) => Restore::Str(k.into(), before),
        }
    }

    fn at(&self, s: SlotRef<'a>) -> Result<usize> {
        self.index
            .get(&s)
            .copied()
            .ok_or_else(|| Error::Corrupt("a window op's slot is not in its table".into()))
    }

    /// Applies `ops` to the values, as Redis will.
    fn replay(&mut self, ops: &'a [Op]) -> Result<()> {
        for op in ops {
            match op {
                Op::HSet { key, fields } => {
                    for (f, v) in fields {
                        let i = self.at(SlotRef::Field(key, f))?;
                        self.values[i] = Some(Cow::Borrowed(v));
                    }
                }
                Op::HIncr { key, field, by } => {
                    let i = self.at(SlotRef::Field(key, field))?;
                    let cur = match &self.values[i] {
                        Some(v) => v.parse::<i64>().map_err(|_| {
                            Error::Corrupt(format!("counter {key} {field} = `{v}`"))
                        })?,
                        None => 0,
                    };
                    self.values[i] = Some(Cow::Owned((cur + by).to_string()));
                }
                Op::SAdd { key, member } => {
                    let i = self.at(SlotRef::Member(key, member))?;
                    self.values[i] = Some(Cow::Borrowed("1"));
                }
                Op::SRem { key, member } => {
                    let i = self.at(SlotRef::Member(key, member))?;
                    self.values[i] = None;
                }
                Op::ZAdd { key, score, member } => {
                    let i = self.at(SlotRef::Scored(key, member))?;
                    self.values[i] = Some(Cow::Owned(score.to_string()));
                }
                Op::Set { key, value } => {
                    let i = self.at(SlotRef::Str(key))?;
                    self.values[i] = Some(Cow::Borrowed(value));
                }
                Op::AddU256 { key, field, amount } => {
                    let i = self.at(SlotRef::total(key, field))?;
                    let cur = match self.totals.get(&i) {
                        Some(t) => *t,
                        None => parse_total(key, self.values[i].as_deref())?,
                    };
                    let next = cur
                        .checked_add(*amount)
                        .ok_or_else(|| Error::Corrupt(format!("total {key} overflows")))?;
                    self.totals.insert(i, next);
                }
            }
        }
        Ok(())
    }

    /// The values the `AddU256` ops among `ops` end at.
    fn totals(&self, ops: impl Iterator<Item = &'a Op>) -> Result<Totals> {
        let mut out = Totals::default();
        for op in ops {
            if let Op::AddU256 { key, field, .. } = op {
                let i = self.at(SlotRef::total(key, field))?;
                let value = match self.totals.get(&i) {
                    Some(t) => *t,
                    None => parse_total(key, self.values[i].as_deref())?,
                };
                out.insert((key.clone(), field.clone()), value);
            }
        }
        Ok(out)
    }
}

/// Each total's final value, keyed by (key, hash field).
type Totals = FastMap<(String, Option<String>), U256>;

fn total_id(key: &str, field: &Option<String>) -> (String, Option<String>) {
    (key.to_owned(), field.clone())
}

fn parse_total(key: &str, value: Option<&str>) -> Result<U256> {
    match value {
        Some(s) => s
            .parse::<U256>()
            .map_err(|_| Error::Corrupt(format!("total {key} = `{s}`"))),
        None => Ok(U256::ZERO),
    }
}

/// The state writes of `ops`, merged per key ([`Batch`]); every total is
/// written once, with its value from `totals`.
fn writes<'a>(ops: impl Iterator<Item = &'a Op>, totals: &Totals) -> Vec<Cmd> {
    let mut batch = Batch::default();
    // Each total is written once; its key is borrowed from the op (no
    // allocation per addition).
    let mut written_totals: FastSet<(&str, Option<&str>)> = FastSet::default();
    let mut digits = itoa::Buffer::new();
    for op in ops {
        match op {
            Op::HSet { key, fields } => {
                let args = fields
                    .iter()
                    .flat_map(|(f, v)| [f.as_bytes(), v.as_bytes()]);
                batch.push(key, Kind::HSet, 2 * fields.len(), args);
            }
            Op::HIncr { key, field, by } => batch.push(
                key,
                Kind::Single(b"HINCRBY"),
                2,
                [field.as_bytes(), by.to_string().as_bytes()].into_iter(),
            ),
            Op::SAdd { key, member } => {
                batch.push(key, Kind::SAdd, 1, std::iter::once(member.as_bytes()))
            }
            Op::SRem { key, member } => {
                batch.push(key, Kind::SRem, 1, std::iter::once(member.as_bytes()))
            }
            Op::ZAdd { key, score, member } => batch.push(
                key,
                Kind::ZAdd,
                2,
                [digits.format(*score).as_bytes(), member.as_bytes()].into_iter(),
            ),
            Op::Set { key, value } => batch.push(
                key,
                Kind::Single(b"SET"),
                1,
                std::iter::once(value.as_bytes()),
            ),
            Op::AddU256 { key, field, .. } => {
                // One write per total, with the batch's final value.
                if written_totals.insert((key.as_str(), field.as_deref())) {
                    let value = totals
                        .get(&total_id(key, field))
                        .copied()
                        .unwrap_or_default()
                        .to_string()
                        .into_bytes();
                    match field {
                        Some(f) => batch.push(
                            key,
                            Kind::Single(b"HSET"),
                            2,
                            [f.as_bytes(), &value].into_iter(),
                        ),
                        None => {
                            batch.push(key, Kind::Single(b"SET"), 1, std::iter::once(&value[..]))
                        }
                    }
                }
            }
        }
    }
    batch.into_commands()
}

/// Every key matching `pattern` (SCAN on every primary); see [`crate::conn::scan`].
pub use crate::conn::scan;

#[cfg(test)]
mod tests {
    use super::*;

    fn text(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.args()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn window_undo_records_restore_each_blocks_pre_values_and_read_back_as_written() {
        let blocks = vec![
            WindowBlock {
                number: 1,
                hash: B256::repeat_byte(1),
                ops: vec![
                    Op::HSet {
                        key: "h".into(),
                        fields: vec![("f".into(), "v1".into())],
                    },
                    Op::AddU256 {
                        key: "t".into(),
                        field: None,
                        amount: U256::from(5),
                    },
                    Op::SAdd {
                        key: "s".into(),
                        member: "m".into(),
                    },
                ],
            },
            WindowBlock {
                number: 2,
                hash: B256::repeat_byte(2),
                ops: vec![
                    Op::HSet {
                        key: "h".into(),
                        fields: vec![("f".into(), "v2".into())],
                    },
                    Op::AddU256 {
                        key: "t".into(),
                        field: None,
                        amount: U256::from(7),
                    },
                    Op::SRem {
                        key: "s".into(),
                        member: "m".into(),
                    },
                    Op::HIncr {
                        key: "h".into(),
                        field: "n".into(),
                        by: 2,
                    },
                ],
            },
        ];
        let mut table = SlotTable::new(&blocks);
        // What Redis held before block 1: `t` = 10, nothing else.
        let read: Vec<Option<String>> = table
            .slots
            .iter()
            .map(|s| (*s == SlotRef::Str("t")).then(|| "10".to_owned()))
            .collect();
        table.values = read.into_iter().map(|v| v.map(Cow::Owned)).collect();
        let mut records = Vec::new();
        for b in &blocks {
            let restore = table.block_slots[records.len()]
                .iter()
                .map(|&i| table.restore(i))
                .collect();
            let json = serde_json::to_string(&UndoRecord {
                prev_number: b.number - 1,
                prev_hash: B256::ZERO,
                restore,
            })
            .expect("serialize");
            records.push(
                serde_json::from_str::<UndoRecord>(&json)
                    .expect("reads back as an UndoRecord")
                    .restore,
            );
            table.replay(&b.ops).expect("replay");
        }
        let s = |v: &str| Some(Cow::Owned(v.to_owned()));
        assert_eq!(
            records[0],
            vec![
                Restore::Field("h".into(), "f".into(), None),
                Restore::Member("s".into(), "m".into(), false),
                Restore::Str("t".into(), s("10")),
            ]
        );
        assert_eq!(
            records[1],
            vec![
                Restore::Field("h".into(), "f".into(), s("v1")),
                Restore::Field("h".into(), "n".into(), None),
                Restore::Member("s".into(), "m".into(), true),
                Restore::Str("t".into(), s("15")),
            ]
        );
        let totals = table
            .totals(blocks.iter().flat_map(|b| &b.ops))
            .expect("totals");
        assert_eq!(totals[&("t".to_owned(), None)], U256::from(22));
    }

    #[test]
    fn batch_merges_runs_per_key_and_keeps_each_keys_order() {
        let mut b = Batch::default();
        let m = |s: &'static str| std::iter::once(s.as_bytes());
        let pair = |f: &'static str, v: &'static str| [f.as_bytes(), v.as_bytes()].into_iter();
        b.push("a", Kind::SAdd, 1, m("x"));
        b.push("h", Kind::HSet, 2, pair("f", "1"));
        b.push("a", Kind::SAdd, 1, m("y"));
        b.push("h", Kind::HSet, 2, pair("f", "2"));
        b.push("a", Kind::SRem, 1, m("x"));
        b.push("a", Kind::SAdd, 1, m("x"));
        b.push("s", Kind::Single(b"SET"), 1, m("1"));
        b.push("s", Kind::Single(b"SET"), 1, m("2"));
        assert_eq!(
            text(&b.into_commands()),
            [
                "SADD a x y",
                "SREM a x",
                "SADD a x",
                "HSET h f 1 f 2",
                "SET s 1",
                "SET s 2"
            ]
        );
    }

    #[test]
    fn batch_splits_commands_at_the_argument_cap() {
        let mut b = Batch::default();
        for i in 0..MAX_ARGS {
            let score = i.to_string();
            b.push(
                "z",
                Kind::ZAdd,
                2,
                [score.as_bytes(), b"m".as_slice()].into_iter(),
            );
        }
        let cmds = b.into_commands();
        assert!(cmds.len() > 1);
        assert!(
            cmds.iter()
                .all(|c| c.len() <= MAX_ARGS && c.arg(0) == b"ZADD")
        );
        let pairs: usize = cmds.iter().map(|c| (c.len() - 2) / 2).sum();
        assert_eq!(pairs, MAX_ARGS);
    }
}
