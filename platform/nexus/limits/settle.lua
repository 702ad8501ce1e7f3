-- Replace a request's token reservation by its real usage, if it is still in the window.
-- KEYS[1] token log, KEYS[2] token total
-- ARGV: reserved member ("id|reserved"), settled member ("id|actual"), actual - reserved, window_ms
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
local total = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[3])
if total < 0 then total = 0 end
redis.call('SET', KEYS[2], total, 'PX', ARGV[4])
return 1
