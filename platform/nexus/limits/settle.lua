#!lua flags=
-- Replace token reservations by real usage, for those whose bucket is still held.
-- KEYS[1] token buckets (acquire.lua)
-- ARGV: window (whole seconds), then pairs: the second the reservation was counted in,
--       actual - reserved
-- A settlement moves no deadline: the hash expires when its newest bucket leaves the
-- window (acquire.lua sets it), and a bucket already gone is not made again.
local oldest = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local changed, total = 0, nil
for i = 2, #ARGV, 2 do
  local s, delta = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local v = s >= oldest and tonumber(redis.call('HGET', KEYS[1], s))
  if v then
    total = total or tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
    delta = math.max(delta, -v)
    redis.call('HINCRBY', KEYS[1], s, delta)
    total = total + delta
    changed = changed + 1
  end
end
if total then redis.call('HSET', KEYS[1], 'n', total) end
return changed
