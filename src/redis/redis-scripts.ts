/**
 * The Lua scripts infergate runs on Redis. Each touches one key (so it works on Redis Cluster)
 * and runs atomically: no other client's command interleaves with it.
 */

/**
 * One token-bucket operation, atomic across every replica. The clock is the Redis server's
 * (`TIME`), so replicas with skewed clocks still share one refill rate. Redis 5+ replicates a
 * script's effects, not the script, which is what makes `TIME` before a write allowed.
 *
 * KEYS[1]: the bucket (a hash: tokens, at). ARGV: capacity, refill per minute, cost,
 * "take" (only if the bucket holds `cost`) or "charge" (always; may go negative).
 * Returns {1, 0} when taken/charged, {0, ms until the bucket holds `cost`} when refused.
 * The key expires when the bucket would be full again: an absent bucket is a full one.
 */
export const rateLimitScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 60000
local cost = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
-- A server whose clock is behind the one that last wrote (after a failover): the bucket's time
-- does not run backwards, or the interval in between would be refilled twice.
local behind = 0
if at > now then
  behind = at - now
  now = at
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
end
local ok = 1
local retry = 0
if ARGV[4] == 'charge' or tokens >= cost then
  tokens = tokens - cost
else
  ok = 0
  retry = math.ceil((cost - tokens) / rate) + behind
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + behind + 1000)
return {ok, retry}
`;

/**
 * Reads a session's history and renews its TTL (sliding expiry).
 * KEYS[1]: the session (a list of serialized messages, oldest first). ARGV[1]: TTL in ms.
 */
export const sessionLoadScript = `
local items = redis.call('LRANGE', KEYS[1], 0, -1)
if #items > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return items
`;

/**
 * Appends messages to a session, then drops the oldest until it holds at most ARGV[2] messages
 * and ARGV[3] bytes, and renews its TTL (ARGV[1] ms). ARGV[4..]: the serialized messages.
 * Returns the number of messages kept.
 */
export const sessionAppendScript = `
for i = 4, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
local maxMessages = tonumber(ARGV[2])
local maxBytes = tonumber(ARGV[3])
local n = redis.call('LLEN', KEYS[1])
if n > maxMessages then
  redis.call('LTRIM', KEYS[1], n - maxMessages, -1)
end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local total = 0
for i = 1, #items do
  total = total + #items[i]
end
local drop = 0
while total > maxBytes and drop < #items do
  drop = drop + 1
  total = total - #items[drop]
end
if drop == #items then
  redis.call('DEL', KEYS[1])
  return 0
end
if drop > 0 then
  redis.call('LTRIM', KEYS[1], drop, -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #items - drop
`;

/**
 * Adds one call's charge to a budget's windows (src/security/redis-budget-store.ts). The windows
 * of one budget share a hash tag, so one script touches them all on Redis Cluster.
 *
 * KEYS: the windows (hashes: t = tokens, c = money, u = calls of unpriced models, and the same
 * per model as t:<model>, c:<model>, u:<model>). ARGV: tokens, money ("" when the model is
 * unpriced), model, then each window's expiry (ms since the epoch), key for key.
 */
export const budgetChargeScript = `
local tokens = tonumber(ARGV[1])
local money = ARGV[2]
local model = ARGV[3]
for i = 1, #KEYS do
  local k = KEYS[i]
  redis.call('HINCRBY', k, 't', tokens)
  redis.call('HINCRBY', k, 't:' .. model, tokens)
  if money == '' then
    redis.call('HINCRBY', k, 'u', 1)
    redis.call('HINCRBY', k, 'u:' .. model, 1)
  else
    redis.call('HINCRBYFLOAT', k, 'c', money)
    redis.call('HINCRBYFLOAT', k, 'c:' .. model, money)
  end
  redis.call('PEXPIREAT', k, ARGV[3 + i])
end
return 1
`;

/**
 * Reads a budget's spend in its windows. KEYS: the windows (as budgetChargeScript writes them).
 * Returns {tokens, money} of each window in turn, as strings ("" for a window not charged).
 */
export const budgetSpentScript = `
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 't', 'c')
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
end
return out
`;
