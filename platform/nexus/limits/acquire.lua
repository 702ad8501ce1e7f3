-- One atomic admission decision for one principal+model, shared by every replica.
-- KEYS[1] request log   (zset: member -> admission ms)
-- KEYS[2] token log     (zset: "member|tokens" -> reservation ms)
-- KEYS[3] token total   (string: sum of the token log)
-- ARGV: window_ms, requests_per_minute, tokens_per_minute, tokens, member  (0 = unlimited;
--       requests_per_minute -1 = a fallback step: neither checked nor counted as a request),
--       then settlements of earlier requests as triples: reserved member, settled member,
--       actual - reserved (folded in here so a request costs one round trip, not two).
-- Time comes from the Redis server so replicas with skewed clocks share one window.
--
-- Expired entries are drained at most DRAIN per call and log. After a burst (thousands of
-- admissions a second), the first calls of the next minute used to remove the whole
-- burst at once, and read every token entry into Lua to subtract it: about 10 ms a call
-- at 7,600 admissions a second. The request count stays exact: entries still waiting to be
-- drained are counted with ZCOUNT and left out. Tokens of waiting entries stay in the total
-- until they are drained; a call they would refuse drains them all first, so no call is
-- refused for tokens that have left the window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local member = ARGV[5]
local horizon = now - window
local DRAIN = 256
local WALK = 1024

local function tokens_of(entry)
  return tonumber(string.match(entry, '|(%-?%d+)$'))
end

-- Milliseconds until the oldest entry still inside the window leaves it (0: none).
local function reset_of(key)
  local first = redis.call('ZRANGEBYSCORE', key, '(' .. horizon, '+inf',
                           'WITHSCORES', 'LIMIT', 0, 1)
  if first[2] then return tonumber(first[2]) + window - now end
  return 0
end

local waiting = redis.call('ZCOUNT', KEYS[1], '-inf', horizon)
if waiting > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, math.min(waiting, DRAIN) - 1)
  waiting = math.max(0, waiting - DRAIN)
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
-- Drops up to `limit` expired reservations (-1: all) from the log and the total; true
-- when some may be left.
local function drain_tokens(limit)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon, 'LIMIT', 0, limit)
  if #expired > 0 then
    for i = 1, #expired do total = total - tokens_of(expired[i]) end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #expired - 1)
  end
  return #expired == limit
end
local tokens_waiting = drain_tokens(DRAIN)
for i = 6, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if score then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('ZADD', KEYS[2], score, ARGV[i + 1])
    total = total + tonumber(ARGV[i + 2])
  end
end
if total < 0 then total = 0 end

local count = redis.call('ZCARD', KEYS[1]) - waiting
if tpm > 0 and total + cost > tpm and tokens_waiting then
  drain_tokens(-1)  -- never refuse for tokens that have left the window
  if total < 0 then total = 0 end
end
local allowed, reason, retry = 1, 0, -1
if rpm > 0 and count >= rpm then
  allowed, reason, retry = 0, 1, reset_of(KEYS[1])
elseif tpm > 0 and total + cost > tpm then
  allowed, reason, retry = 0, 2, window
  if cost <= tpm then
    local excess = total + cost - tpm
    -- The oldest WALK entries at most: past them the retry stays a whole window (later
    -- than needed, never earlier), so a refused call costs no more than an admitted one.
    local entries = redis.call('ZRANGE', KEYS[2], 0, WALK - 1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - tokens_of(entries[i])
      if excess <= 0 then
        -- 0 when a waiting entry frees enough: the next call drains it
        retry = math.max(0, tonumber(entries[i + 1]) + window - now)
        break
      end
    end
  end
else
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], now, member)
    count = count + 1
  end
  if cost > 0 then
    redis.call('ZADD', KEYS[2], now, member .. '|' .. cost)
    total = total + cost
  end
end
redis.call('SET', KEYS[3], total, 'PX', window)
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {allowed, reason, rpm - count, reset_of(KEYS[1]), tpm - total, reset_of(KEYS[2]), retry}
