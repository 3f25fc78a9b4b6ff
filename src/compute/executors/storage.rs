//! `storage`: put / get / delete / list objects in a per-wallet namespace,
//! with a TTL, a per-object and a per-wallet size limit. Priced per MB
//! stored or read (decimal MB, 1,000,000 bytes).

use std::collections::HashMap;

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::StorageKeys;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::compute::config::StorageConfig;
use crate::compute::executor::{
    Bound, Executor, Failure, JobContext, Output, Refusal, str_field, u64_field,
};

/// The index field holding the wallet's total bytes (object keys never start with `#`).
const TOTAL: &str = "#total";
/// Objects per wallet at most.
const MAX_OBJECTS: u64 = 10_000;

/// Stores an object. KEYS: object, index. ARGV: content, size, ttl ms (0 =
/// none), max wallet bytes, key, now ms, content type, max objects.
/// Returns {1, total} stored, {0, total} over the wallet limit, {-1} too many objects.
const PUT_LUA: &str = r"
local function num(v) if v then return tonumber(v) end return 0 end
local function s(n) return string.format('%d', n) end
local now = tonumber(ARGV[6])
local size = tonumber(ARGV[2])
local function entry(v)
  local a, b = string.match(v, '^(%d+):(%d+)$')
  return tonumber(a or '0'), tonumber(b or '0')
end
local function sweep()
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if all[i] ~= '#total' then
      local sz, ex = entry(all[i + 1])
      if ex > 0 and ex <= now then
        redis.call('HDEL', KEYS[2], all[i])
        redis.call('HINCRBY', KEYS[2], '#total', s(-sz))
      end
    end
  end
end
local oldsize = 0
local old = redis.call('HGET', KEYS[2], ARGV[5])
if old then
  local sz, ex = entry(old)
  if ex > 0 and ex <= now then
    redis.call('HDEL', KEYS[2], ARGV[5])
    redis.call('HINCRBY', KEYS[2], '#total', s(-sz))
  else
    oldsize = sz
  end
end
local total = num(redis.call('HGET', KEYS[2], '#total'))
if total - oldsize + size > tonumber(ARGV[4]) then
  sweep()
  total = num(redis.call('HGET', KEYS[2], '#total'))
  if total - oldsize + size > tonumber(ARGV[4]) then return {0, s(total)} end
end
if oldsize == 0 and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 and redis.call('HLEN', KEYS[2]) > tonumber(ARGV[8]) then
  return {-1, s(total)}
end
local exp = 0
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'c', ARGV[1], 't', ARGV[7])
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  exp = now + tonumber(ARGV[3])
end
redis.call('HSET', KEYS[2], ARGV[5], s(size) .. ':' .. s(exp))
redis.call('HINCRBY', KEYS[2], '#total', s(size - oldsize))
return {1, s(total - oldsize + size)}
";

/// Deletes an object. KEYS: object, index. ARGV: key. Returns 1 if it existed.
const DELETE_LUA: &str = r"
local existed = redis.call('DEL', KEYS[1])
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local sz = tonumber(string.match(old, '^(%d+):') or '0')
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[2], '#total', string.format('%d', -sz))
end
return existed
";

/// The storage service.
pub struct Storage {
    conn: RedisConn,
    cfg: StorageConfig,
    put: redis::Script,
    delete: redis::Script,
}

impl Storage {
    /// On `conn`, with these limits.
    pub fn new(conn: RedisConn, cfg: StorageConfig) -> Self {
        Self {
            conn,
            cfg,
            put: redis::Script::new(PUT_LUA),
            delete: redis::Script::new(DELETE_LUA),
        }
    }
}

fn mb(bytes: u64) -> Decimal {
    Decimal::from(bytes) / Decimal::from(1_000_000u32)
}

/// A valid object key: 1..=256 of `A-Z a-z 0-9 . _ - / :`.
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 256
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
}

struct Request<'a> {
    op: &'a str,
    key: Option<&'a str>,
    content: Option<&'a str>,
    content_type: &'a str,
    ttl: u64,
}

impl Storage {
    fn parse<'a>(&self, payload: &'a Value) -> Result<Request<'a>, Refusal> {
        let op = str_field(payload, "operation")?.ok_or_else(|| {
            Refusal::Invalid("payload.operation is required: put, get, delete or list".into())
        })?;
        let key = str_field(payload, "key")?;
        if !matches!(op, "put" | "get" | "delete" | "list") {
            return Err(Refusal::Invalid(format!(
                "payload.operation must be put, get, delete or list (got `{op}`)"
            )));
        }
        if op != "list" {
            let k =
                key.ok_or_else(|| Refusal::Invalid(format!("payload.key is required for {op}")))?;
            if !valid_key(k) {
                return Err(Refusal::Invalid(
                    "payload.key must be 1-256 characters of A-Z a-z 0-9 . _ - / :".into(),
                ));
            }
        }
        let content = str_field(payload, "content")?;
        if op == "put" {
            let c = content.ok_or_else(|| {
                Refusal::Invalid("payload.content (a string) is required for put".into())
            })?;
            if c.len() as u64 > self.cfg.max_object_bytes {
                return Err(Refusal::Invalid(format!(
                    "payload.content is {} bytes; objects are at most {} bytes",
                    c.len(),
                    self.cfg.max_object_bytes
                )));
            }
        }
        let ttl = u64_field(payload, "ttl")?.unwrap_or(0);
        if self.cfg.max_ttl_secs > 0 && ttl > self.cfg.max_ttl_secs {
            return Err(Refusal::Invalid(format!(
                "payload.ttl is at most {} seconds",
                self.cfg.max_ttl_secs
            )));
        }
        let content_type = str_field(payload, "contentType")?.unwrap_or("text/plain");
        if content_type.len() > 128 {
            return Err(Refusal::Invalid("payload.contentType is too long".into()));
        }
        Ok(Request {
            op,
            key,
            content,
            content_type,
            ttl: if ttl == 0 && self.cfg.max_ttl_secs > 0 {
                self.cfg.max_ttl_secs
            } else {
                ttl
            },
        })
    }

    async fn exec(&self, wallet: Address, r: Request<'_>) -> Result<Output, Failure> {
        let keys = StorageKeys;
        let mut conn = self.conn.clone();
        let store = |e: redis::RedisError| {
            tracing::warn!(target: "chainfront::compute", error = %e, "storage: redis error");
            Failure::new("storage unavailable; retry shortly")
        };
        let key = r.key.unwrap_or_default();
        match r.op {
            "put" => {
                let content = r.content.unwrap_or_default();
                let size = content.len() as u64;
                let (code, total): (i64, String) = self
                    .put
                    .key(keys.object(wallet, key))
                    .key(keys.index(wallet))
                    .arg(content)
                    .arg(size)
                    .arg(r.ttl.saturating_mul(1000))
                    .arg(self.cfg.max_wallet_bytes)
                    .arg(key)
                    .arg(crate::ledger::now_ms())
                    .arg(r.content_type)
                    .arg(MAX_OBJECTS)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(store)?;
                match code {
                    1 => Ok(Output {
                        result: json!({
                            "operation": "put", "key": key, "size": size,
                            "ttl": r.ttl, "totalBytes": total.parse::<u64>().unwrap_or(0),
                        }),
                        units: mb(size),
                    }),
                    0 => Err(Failure::new(format!(
                        "storage limit: this wallet stores {total} bytes; at most {} bytes per wallet",
                        self.cfg.max_wallet_bytes
                    ))),
                    _ => Err(Failure::new(format!(
                        "storage limit: at most {MAX_OBJECTS} objects per wallet"
                    ))),
                }
            }
            "get" => {
                let h: HashMap<String, String> = conn
                    .hgetall(keys.object(wallet, key))
                    .await
                    .map_err(store)?;
                let Some(content) = h.get("c") else {
                    return Err(Failure::new(format!("no object `{key}`")));
                };
                let size = content.len() as u64;
                Ok(Output {
                    result: json!({
                        "operation": "get", "key": key, "content": content,
                        "contentType": h.get("t").cloned().unwrap_or_default(), "size": size,
                    }),
                    units: mb(size),
                })
            }
            "delete" => {
                let existed: i64 = self
                    .delete
                    .key(keys.object(wallet, key))
                    .key(keys.index(wallet))
                    .arg(key)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(store)?;
                Ok(Output {
                    result: json!({"operation": "delete", "key": key, "deleted": existed == 1}),
                    units: Decimal::ZERO,
                })
            }
            _ => {
                let idx: HashMap<String, String> =
                    conn.hgetall(keys.index(wallet)).await.map_err(store)?;
                let now = crate::ledger::now_ms();
                let mut objects: Vec<(String, u64, u64)> = idx
                    .iter()
                    .filter(|(k, _)| k.as_str() != TOTAL)
                    .filter_map(|(k, v)| {
                        let (sz, ex) = v.split_once(':')?;
                        let (sz, ex) = (sz.parse().ok()?, ex.parse().ok()?);
                        (ex == 0 || ex > now).then(|| (k.clone(), sz, ex))
                    })
                    .collect();
                objects.sort();
                let total: u64 = objects.iter().map(|o| o.1).sum();
                let list: Vec<Value> = objects
                    .iter()
                    .map(|(k, sz, ex)| {
                        json!({"key": k, "size": sz, "expiresAt": if *ex == 0 { Value::Null } else { json!(ex) }})
                    })
                    .collect();
                Ok(Output {
                    result: json!({"operation": "list", "objects": list, "count": list.len(), "totalBytes": total}),
                    units: Decimal::ZERO,
                })
            }
        }
    }
}

impl Executor for Storage {
    fn check(&self, payload: &Value) -> Result<Bound, Refusal> {
        let r = self.parse(payload)?;
        Ok(Some(match r.op {
            "put" => mb(r.content.map_or(0, |c| c.len() as u64)),
            "get" => mb(self.cfg.max_object_bytes),
            _ => Decimal::ZERO,
        }))
    }

    fn run<'a>(
        &'a self,
        ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let r = self
                .parse(payload)
                .map_err(|e| Failure::new(e.to_string()))?;
            self.exec(ctx.wallet, r).await
        }
        .boxed()
    }
}
