-- Replace token reservations by real usage, for those still in the window.
-- KEYS[1] token log, KEYS[2] token total
-- ARGV: window_ms, then triples: reserved member ("id|reserved"), settled member
-- ("id|actual"), actual - reserved
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
if changed > 0 then redis.call('SET', KEYS[2], total, 'PX', ARGV[1]) end
return changed
