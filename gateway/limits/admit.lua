-- One admission, atomically, in one round trip. Applies what the caller has queued since its
-- last call (released slots, token usage), then checks, in order: the key's requests and
-- tokens per minute, the deployment's cooldown, its concurrency and its requests per minute.
-- Only when every check passes are the request and its slot recorded.
--
-- KEYS: 1 key requests (zset), 2 key tokens (zset), 3 deployment slots (zset of leases by expiry),
--       4 deployment cooldown (string), 5 deployment requests (zset),
--       then one slots key per queued release, one tokens key per queued usage, one slots key
--       per queued renewal.
-- ARGV: 1 key rpm (0: none), 2 key tpm (0: none), 3 max parallel (0: none), 4 deployment rpm (0: none),
--       5 lease id (unique per call: it names the usages too), 6 lease ttl ms,
--       7 number of releases, then their lease ids, then the number of usages, then each
--       one's "tokens:unique id", then the number of renewals, then their lease ids and ttls (ms) in pairs.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = 60000
local releases = tonumber(ARGV[7])
for i = 1, releases do
  redis.call('ZREM', KEYS[5 + i], ARGV[7 + i])
end
local usages = tonumber(ARGV[8 + releases])
for i = 1, usages do
  local key = KEYS[5 + releases + i]
  redis.call('ZADD', key, now, ARGV[8 + releases + i])
  redis.call('PEXPIRE', key, window)
end
local renewals_at = 9 + releases + usages
local renewals = tonumber(ARGV[renewals_at])
for i = 1, renewals do
  -- A stream still running keeps its slot: XX renews a lease that is still there, never adds one.
  local key = KEYS[5 + releases + usages + i]
  local ttl = tonumber(ARGV[renewals_at + 2 * i])
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[renewals_at + 2 * i - 1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

local function count_since(key, since)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', since)
  return redis.call('ZCARD', key)
end
local function wait_for_oldest(key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] == nil then return 1000 end
  return math.max(1, tonumber(oldest[2]) + window - now)
end

local key_rpm, key_tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if key_rpm > 0 and count_since(KEYS[1], now - window) >= key_rpm then
  return {'key_rpm', wait_for_oldest(KEYS[1])}
end
if key_tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local used = 0
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    used = used + tonumber(string.match(member, '^(%d+)'))
  end
  if used >= key_tpm then
    return {'key_tpm', wait_for_oldest(KEYS[2])}
  end
end
local cooling = redis.call('PTTL', KEYS[4])
if cooling > 0 then
  return {'cooling', cooling}
end
local parallel, deployment_rpm = tonumber(ARGV[3]), tonumber(ARGV[4])
if parallel > 0 and count_since(KEYS[3], now) >= parallel then
  return {'busy', 0}
end
if deployment_rpm > 0 and count_since(KEYS[5], now - window) >= deployment_rpm then
  return {'deployment_rpm', wait_for_oldest(KEYS[5])}
end

local lease = ARGV[5]
if key_rpm > 0 then
  redis.call('ZADD', KEYS[1], now, lease)
  redis.call('PEXPIRE', KEYS[1], window)
end
if parallel > 0 then
  local ttl = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
if deployment_rpm > 0 then
  redis.call('ZADD', KEYS[5], now, lease)
  redis.call('PEXPIRE', KEYS[5], window)
end
return {'ok', 0}
