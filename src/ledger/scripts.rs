//! The ledger's Lua scripts: every change of a balance is one of these, run
//! atomically by Redis (and written to the AOF as one unit). Amounts travel
//! as decimal strings of base units; `s()` formats Lua numbers back without
//! exponent notation (every figure stays below 2^53, see `MAX_UNITS`).

/// Shared helpers, prepended to each script.
const PRELUDE: &str = r"
local function num(v) if v then return tonumber(v) end return 0 end
local function s(n) return string.format('%d', n) end
-- Helpers take positions in KEYS, not key names, so every key a script
-- touches is one it declared (cluster routing, proxies).
local function add_avail(bal, n)
  if n <= 0 then return end
  local debt = num(redis.call('HGET', KEYS[bal], 'debt'))
  local pay = math.min(debt, n)
  if pay > 0 then redis.call('HINCRBY', KEYS[bal], 'debt', s(-pay)) end
  if n - pay > 0 then redis.call('HINCRBY', KEYS[bal], 'avail', s(n - pay)) end
end
local function entry(stream, bal, ts, ...)
  local v = redis.call('HMGET', KEYS[bal], 'avail', 'pend', 'debt')
  redis.call('XADD', KEYS[stream], '*', 'ts', ts, 'available', s(num(v[1])), 'pending', s(num(v[2])), 'owed', s(num(v[3])), ...)
end
-- Takes back the credit record `cur` (`c|wallet|amount|..`) from the balance
-- at KEYS[bal]: what is available, the rest as a debt; logs the reversal.
-- Returns taken, owed; or nil and the record's wallet (nothing written) when
-- the record is not `wallet`'s.
local function take_back(cur, wallet, bal, stream, ts, ref, reason)
  local parts = {}
  for p in string.gmatch(cur, '[^|]+') do parts[#parts + 1] = p end
  if parts[2] ~= wallet then return nil, parts[2] end
  local amount = tonumber(parts[3])
  local take = math.min(num(redis.call('HGET', KEYS[bal], 'avail')), amount)
  if take > 0 then redis.call('HINCRBY', KEYS[bal], 'avail', s(-take)) end
  if amount - take > 0 then redis.call('HINCRBY', KEYS[bal], 'debt', s(amount - take)) end
  redis.call('HINCRBY', KEYS[bal], 'dep', s(-amount))
  entry(stream, bal, ts, 'kind', 'reversal', 'amount', parts[3], 'ref', ref, 'reason', reason)
  return take, amount - take
end
";

/// Credit once per idempotency key; a key an x402 payment consumed (`x|`)
/// is never credited.
/// KEYS: credits, balance, entries, watch. ARGV: key, wallet, amount, block,
/// source, watch member ('' = none), now ms, max units.
/// Returns {1} credited, {0, record} already credited (or consumed), {-1} too large.
const CREDIT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and (string.sub(cur, 1, 2) == 'c|' or string.sub(cur, 1, 2) == 'x|') then return {0, cur} end
local amount = tonumber(ARGV[3])
local max = tonumber(ARGV[8])
local avail = num(redis.call('HGET', KEYS[2], 'avail'))
if amount > max or avail + amount > max then return {-1, ''} end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[6]) end
add_avail(2, amount)
redis.call('HINCRBY', KEYS[2], 'dep', ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], 'c|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. ARGV[5])
entry(3, 2, ARGV[7], 'kind', 'credit', 'amount', ARGV[3], 'ref', ARGV[1], 'source', ARGV[5])
return {1, ''}
";

/// Reverse a credit (a deposit the chain no longer has). What is still
/// available is taken back; the rest becomes a debt that later credits and
/// refunds pay first, so `avail` never goes below zero.
/// KEYS: credits, balance, entries, watch. ARGV: key, wallet, watch member,
/// now ms, reason. Returns {1, taken, owed}, {0} not credited, {-2, wallet}
/// when the record belongs to another wallet.
const REVERSE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or string.sub(cur, 1, 2) ~= 'c|' then
  redis.call('ZREM', KEYS[4], ARGV[3])
  return {0}
end
local take, owed = take_back(cur, ARGV[2], 2, 3, ARGV[4], ARGV[1], ARGV[5])
if not take then return {-2, owed} end
redis.call('HSET', KEYS[1], ARGV[1], 'r|' .. string.sub(cur, 3))
redis.call('ZREM', KEYS[4], ARGV[3])
return {1, s(take), s(owed)}
";

/// Mark a deposit key as consumed by an x402 payment for a service (a
/// credentials fetch): the transfer paid for something and is never
/// credited. If a deposit path credited it first (an external facilitator's
/// settlement, seen by the indexer before the node recorded it), that credit
/// is taken back as `REVERSE` takes it (the shared `take_back`).
/// KEYS: credits, balance, entries, watch. ARGV: key, wallet, amount, block,
/// note, watch member, now ms, reason.
/// Returns {1, taken, owed} consumed now, {0} consumed before, {-2, wallet}
/// when a credit under the key belongs to another wallet.
const CONSUME: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, 2) == 'x|' then return {0} end
local take, owed = 0, 0
if cur and string.sub(cur, 1, 2) == 'c|' then
  take, owed = take_back(cur, ARGV[2], 2, 3, ARGV[7], ARGV[1], ARGV[8])
  if not take then return {-2, owed} end
end
redis.call('ZREM', KEYS[4], ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], 'x|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. ARGV[5])
return {1, s(take), s(owed)}
";

/// Open a job: reserve its maximum charge and queue it, or record it as
/// failed for want of balance.
/// KEYS: balance, entries, job, wallet jobs, queue, stats. ARGV: job id, request id,
/// service, wallet, need, now ms, payload, callback, ttl s, jobs kept per wallet,
/// queue score, initial status (`pending`, or `processing` for a job its
/// request runs itself, e.g. a stream), mode.
/// Returns {1, available after}, {0, available} short, {-1} id taken.
const OPEN_JOB: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1, '0'} end
local need = tonumber(ARGV[5])
local avail = num(redis.call('HGET', KEYS[1], 'avail'))
redis.call('HINCRBY', KEYS[6], 'requests', 1)
redis.call('HINCRBY', KEYS[6], 'req:' .. ARGV[3], 1)
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
local keep = tonumber(ARGV[10])
if redis.call('ZCARD', KEYS[4]) > keep then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -keep - 1) end
if avail < need then
  redis.call('HSET', KEYS[3], 'id', ARGV[1], 'req', ARGV[2], 'service', ARGV[3], 'wallet', ARGV[4],
    'status', 'failed', 'reserved', '0', 'cost', '0', 'error', 'insufficient', 'need', ARGV[5],
    'have', s(avail), 'created', ARGV[6], 'finished', ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
  redis.call('HINCRBY', KEYS[6], 'jobs:failed', 1)
  return {0, s(avail)}
end
redis.call('HINCRBY', KEYS[1], 'avail', s(-need))
redis.call('HINCRBY', KEYS[1], 'pend', ARGV[5])
local started = '0'
local attempts = '0'
if ARGV[12] == 'processing' then started = ARGV[6]; attempts = '1' end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'req', ARGV[2], 'service', ARGV[3], 'wallet', ARGV[4],
  'status', ARGV[12], 'reserved', ARGV[5], 'payload', ARGV[7], 'callback', ARGV[8],
  'created', ARGV[6], 'attempts', attempts, 'started', started, 'mode', ARGV[13])
redis.call('ZADD', KEYS[5], ARGV[11], ARGV[1])
redis.call('HINCRBY', KEYS[6], 'jobs:' .. ARGV[12], 1)
entry(2, 1, ARGV[6], 'kind', 'reserve', 'amount', ARGV[5], 'ref', ARGV[1])
return {1, s(avail - need)}
";

/// Settle an open job once: charge `cost` (at most what was reserved),
/// give back the rest, record the outcome. A settled job is never settled
/// again, so a job that ran twice (a node died mid-job) is charged once.
/// KEYS: job, balance, entries, queue, stats, usage day, usage all.
/// ARGV: job id, outcome, cost, now ms, result, usage, error, duration ms,
/// ttl s, required status ('' = pending or processing), wallet ('' = any),
/// usage-day ttl s, count usage ('1'/'0').
/// Returns {1, cost}, {0, status} already settled / not in the required
/// status, {-1} no such job, {-2} another wallet's job.
const SETTLE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'status', 'reserved', 'wallet', 'service')
local st = f[1]
if not st then return {-1, ''} end
if ARGV[11] ~= '' and f[3] ~= ARGV[11] then return {-2, ''} end
if st ~= 'pending' and st ~= 'processing' then return {0, st} end
if ARGV[10] ~= '' and st ~= ARGV[10] then return {0, st} end
local reserved = num(f[2])
local cost = math.min(tonumber(ARGV[3]), reserved)
redis.call('HINCRBY', KEYS[2], 'pend', s(-reserved))
if cost > 0 then redis.call('HINCRBY', KEYS[2], 'spent', s(cost)) end
add_avail(2, reserved - cost)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'cost', s(cost), 'result', ARGV[5], 'usage', ARGV[6],
  'error', ARGV[7], 'finished', ARGV[4], 'duration', ARGV[8])
redis.call('HDEL', KEYS[1], 'payload')
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'jobs:' .. st, -1)
redis.call('HINCRBY', KEYS[5], 'jobs:' .. ARGV[2], 1)
if cost > 0 then redis.call('HINCRBY', KEYS[5], 'revenue', s(cost)) end
if ARGV[13] == '1' then
  local svc = f[4]
  for i = 6, 7 do
    redis.call('HINCRBY', KEYS[i], svc .. ':n', 1)
    redis.call('HINCRBY', KEYS[i], svc .. ':cost', s(cost))
    redis.call('HINCRBY', KEYS[i], svc .. ':ms', ARGV[8])
  end
  redis.call('EXPIRE', KEYS[6], ARGV[12])
end
if cost > 0 then entry(3, 2, ARGV[4], 'kind', 'charge', 'amount', s(cost), 'ref', ARGV[1]) end
if reserved - cost > 0 then entry(3, 2, ARGV[4], 'kind', 'refund', 'amount', s(reserved - cost), 'ref', ARGV[1]) end
return {1, s(cost)}
";

/// The scripts, loaded once.
pub(crate) struct Scripts {
    pub credit: redis::Script,
    pub reverse: redis::Script,
    pub consume: redis::Script,
    pub open_job: redis::Script,
    pub settle: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            credit: with(CREDIT),
            reverse: with(REVERSE),
            consume: with(CONSUME),
            open_job: with(OPEN_JOB),
            settle: with(SETTLE),
        }
    }
}
