#!lua flags=
-- One atomic admission decision for one principal+model, shared by every replica.
-- KEYS[1] request buckets (hash: second -> admissions in it, 'n' -> their sum,
--                          'lo' -> the oldest second still held)
-- KEYS[2] token buckets   (hash: second -> tokens reserved in it, 'n', 'lo' likewise)
-- ARGV: window (whole seconds), requests_per_minute, tokens_per_minute, tokens
--       (0 = unlimited; requests_per_minute -1 = a fallback step: neither checked nor
--       counted as a request), then settlements of earlier requests as pairs: the second
--       their tokens were counted in, actual - reserved (folded in here so a request costs
--       one round trip, not two).
-- Returns: allowed, reason (1 requests, 2 tokens), requests left, ms until the oldest
--          request bucket leaves, tokens left, ms likewise, Retry-After ms (-1: none), the
--          second this call's tokens were counted in.
--
-- State of constant size: one counter per second with traffic in it, at most window + 1
-- per hash, whatever the rate (the per-admission logs this replaces held ~450,000 entries
-- for one key at 7,600 admissions a second). An admission counts from the moment it is
-- made until its second's bucket is older than the window: between `window` and
-- `window` + 1 seconds. So no `window` seconds ever hold more than the limit, and a
-- call is refused only when the admissions of the last `window` + 1 seconds fill it.
-- Time comes from the Redis server so replicas with skewed clocks share one window.
--
-- The shebang without `allow-oom` makes Redis refuse the whole script before it runs
-- when used memory is over maxmemory (src/script.c scriptPrepareForRun: "-OOM allow-oom
-- flag is not set on the script"), and with `-READONLY` on a replica: never half applied.
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local oldest = sec - window  -- the oldest second still counted

-- Drops the buckets that left the window; returns the sum and the oldest second held.
local function slide(key)
  local head = redis.call('HMGET', key, 'n', 'lo')
  local total, lo = tonumber(head[1]) or 0, tonumber(head[2])
  if lo == nil or lo >= oldest then return total, lo end
  -- Held seconds lie in [lo, lo + window] (lo is at most a window older than the newest).
  if lo + window < oldest then
    redis.call('DEL', key)
    return 0, nil
  end
  local fields = {}
  for s = lo, lo + window do fields[#fields + 1] = s end
  local values = redis.call('HMGET', key, unpack(fields))
  local gone, new_lo = {}, nil
  for i = 1, #fields do
    local v = values[i]
    if v then
      if fields[i] < oldest then
        total = total - tonumber(v)
        gone[#gone + 1] = fields[i]
      elseif new_lo == nil then
        new_lo = fields[i]
      end
    end
  end
  if new_lo == nil then
    redis.call('DEL', key)
    return 0, nil
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  redis.call('HSET', key, 'n', total, 'lo', new_lo)
  return total, new_lo
end

-- Ms until enough of the oldest buckets leave for `excess` to have gone.
local function wait_for(key, lo, excess)
  local fields = {}
  for s = lo, sec do fields[#fields + 1] = s end
  local values = redis.call('HMGET', key, unpack(fields))
  for i = 1, #fields do
    excess = excess - (tonumber(values[i]) or 0)
    if excess <= 0 then return (fields[i] + window + 1) * 1000 - now end
  end
  return window * 1000
end

local function add(key, total, lo, amount)
  redis.call('HINCRBY', key, sec, amount)
  redis.call('HSET', key, 'n', total + amount, 'lo', lo or sec)
  redis.call('EXPIREAT', key, sec + window + 1)  -- when its newest bucket leaves
  return total + amount, lo or sec
end

local count, req_lo = slide(KEYS[1])
local total, tok_lo = slide(KEYS[2])
for i = 5, #ARGV, 2 do
  local s, delta = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local v = s >= oldest and tonumber(redis.call('HGET', KEYS[2], s))
  if v then  -- a bucket already gone took its reservation along: nothing to correct
    delta = math.max(delta, -v)
    redis.call('HINCRBY', KEYS[2], s, delta)
    total = total + delta
    redis.call('HSET', KEYS[2], 'n', total)
  end
end

local allowed, reason, retry = 1, 0, -1
if rpm > 0 and count >= rpm then
  allowed, reason, retry = 0, 1, wait_for(KEYS[1], req_lo, count - rpm + 1)
elseif tpm > 0 and total + cost > tpm then
  allowed, reason, retry = 0, 2, window * 1000
  if cost <= tpm and tok_lo then retry = wait_for(KEYS[2], tok_lo, total + cost - tpm) end
else
  if rpm >= 0 then count, req_lo = add(KEYS[1], count, req_lo, 1) end
  if cost > 0 then total, tok_lo = add(KEYS[2], total, tok_lo, cost) end
end
local function reset(lo)
  if lo then return (lo + window + 1) * 1000 - now end
  return 0
end
return {allowed, reason, rpm - count, reset(req_lo), tpm - total, reset(tok_lo), retry, sec}
