-- Replace token reservations by real usage, for those still in the log.
-- KEYS[1] token log, KEYS[2] token total
-- ARGV: window_ms, then triples: reserved member ("id|reserved"), settled member
-- ("id|actual"), actual - reserved
--
-- The log and its total expire together, when the key's last acquire set them to
-- (acquire.lua sets both to a window from its call); a settlement moves neither deadline.
-- It used to set the total's to a window from now, so a total could outlive its log and
-- keep tokens nothing subtracts any more; and re-adding a log's only member made the
-- log again, without an expiry.
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = tonumber(ARGV[1]) end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local changed = 0
for i = 2, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[1], score, ARGV[i + 1])
    total = total + tonumber(ARGV[i + 2])
    changed = changed + 1
  end
end
if total < 0 then total = 0 end
if changed > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[2], total, 'PX', ttl)
end
return changed
