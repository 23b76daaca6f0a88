-- fieldlab rate limit: one check of a policy that is a single token bucket or GCRA limit (most
-- policies), specialised to that limit. redis.rs puts one line before this text with the
-- limit's constants, so each such limit has its own script (and SHA):
--   local alg, lim, per, burst, a, b, ttl = <1|2>, limit, period_ms, burst, A, B, '<ms>'
-- token bucket (alg 1): A = capacity in scaled units (burst * period_ms), B = ms to refill
-- from empty; GCRA (alg 2): A = emission interval (µs), B = tolerance (burst * A, µs).
-- ttl: B in ms + 1 s, the longest any state can matter (an older one equals no state).
--
-- KEYS[1]: the limit's state, the same key and format as check.lua's ("tokens:last" or "tat"),
-- so the two scripts can take turns on a key. ARGV[1]: units requested (absent: 1). ARGV[2]:
-- now in ms (tests); absent: the Redis server clock (TIME), the normal case.
--
-- Reply: ONE integer, from which algo.rs derives the whole decision (TokenBucket::decision,
-- Gcra::decision): the tokens left (token bucket) or how far the tat is ahead of now in µs
-- (GCRA), as x >= 0 if allowed and -1 - x if rejected. Why so little: on this path the script
-- is the cost of a check, and in Redis 7 a six-integer table reply costs about as much as the
-- GET; limit arguments cost about 1 µs each (parsed and interned on every call), hence the
-- constants in the text. The arithmetic is algo.rs's in integers (all < 2^53, so exact in Lua
-- numbers); nothing is written on a rejection.
local now = ARGV[2]
if now then now = tonumber(now) else
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  now = tonumber(t[1]) * 1000 + (us - us % 1000) / 1000
end
-- One unit is the common request: sent as no argument at all (each costs about 1 µs here),
-- and no tonumber (strtod, about 5% of the script's cost).
local n = ARGV[1]
if n == nil then n = 1 else n = tonumber(n) end
local key = KEYS[1]
local st = redis.call('GET', key)
if alg == 1 then
  local tokens, last = a, now
  if st then
    local x, y = string.match(st, '^(%d+):(%-?%d+)$')
    tokens, last = tonumber(x), tonumber(y)
  end
  -- Refill for the time since the last check (none if the clock went back), at most to full.
  local el = now - last
  if el < 0 then el = 0 elseif el > b then el = b end
  tokens = tokens + el * lim
  if tokens > a then tokens = a end
  if now > last then last = now end
  local need = n * per
  if n > burst or need > tokens then return -1 - tokens end
  tokens = tokens - need
  if tokens < a then
    redis.call('PSETEX', key, ttl, string.format('%d:%d', tokens, last))
  else
    redis.call('DEL', key)
  end
  return tokens
end
local nowu = now * 1000
local tat = tonumber(st) or nowu
if tat < nowu then tat = nowu end
local new_tat = tat + n * a
if n > burst or new_tat - nowu > b then return -1 - (tat - nowu) end
if new_tat > nowu then
  redis.call('PSETEX', key, ttl, string.format('%d', new_tat))
else
  redis.call('DEL', key)
end
return new_tat - nowu
