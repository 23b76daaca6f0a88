-- fieldlab rate limit: one check of a policy that is a single token bucket or GCRA limit (most
-- policies), specialised to that limit. redis.rs puts one line before this text with the
-- limit's constants, so each such limit has its own script (and SHA):
--   local alg, lim, per, burst, a, b, ttl = <1..4>, limit, period_ms, burst, A, B, '<ms>'
-- alg 3 (token bucket) and 4 (GCRA): the time per unit is a whole number of ms, and the state
-- is the key's expiry (see below); A = that time (ms), B = burst * A (ms).
-- alg 1, token bucket: A = capacity in scaled units (burst * period_ms), B = ms to refill
-- from empty; alg 2, GCRA: A = emission interval (µs), B = tolerance (burst * A, µs). Their
-- state is a string: "tokens:last" or "tat", with a TTL of ttl ms (B in ms + 1 s, the longest
-- any state can matter; an older one equals no state).
--
-- KEYS[1]: the limit's state, the same key and format as check.lua's for this limit, so the
-- two scripts can take turns on a key. ARGV[1]: units requested (absent: 1). ARGV[2]: now in
-- ms (tests); absent: the Redis server clock, the normal case.
--
-- Reply: ONE integer, from which redis.rs derives the whole decision with algo.rs's own
-- functions (TokenBucket::decision, Gcra::decision): alg 3 and 4: how far the limit's instant
-- is ahead of now, in ms; alg 1: the tokens left; alg 2: how far the tat is ahead of now, in
-- µs; as x >= 0 if allowed and -1 - x if rejected. Why so little: on this path the script is the
-- cost of a check, and in Redis 7 a six-integer table reply costs about as much as a GET; limit
-- arguments cost about 1 µs each (parsed and interned on every call), hence the constants in
-- the text. The arithmetic is algo.rs's in integers (all < 2^53, so exact in Lua numbers);
-- nothing is written on a rejection.
local key = KEYS[1]
-- One unit is the common request: sent as no argument at all, and no tonumber (strtod).
local n = ARGV[1]
if n == nil then n = 1 else n = tonumber(n) end
local now = ARGV[2]

if alg > 2 then
  -- The state is one instant, in ms: when the bucket is full again (token bucket), the tat
  -- (GCRA). Redis keeps it as the key's expiry, so on the server clock the key's TTL is how far
  -- it is ahead of now: one PTTL reads clock and state at once, and the key is gone when the
  -- state holds nothing. Two calls a check, integers only.
  local h
  if now then
    -- Tests: the clock is ARGV[2] and the instant the key's absolute expiry (a test clock is
    -- ahead of the server's, or the key would expire at once).
    now = tonumber(now)
    h = redis.call('PEXPIRETIME', key)
    if h >= 0 then h = h - now end
  else
    h = redis.call('PTTL', key) -- -2: no key; -1: a key without expiry, not ours
  end
  local held = h
  if held < 0 then held = 0 elseif alg == 3 and held > b then held = b end -- never below empty
  local new = held + n * a
  if new > b then return -1 - held end -- (n > burst gives new > b too)
  if now then
    if new > 0 then redis.call('SET', key, '', 'PXAT', now + new) else redis.call('DEL', key) end
  elseif new > 0 and new ~= h then
    if h > 0 then redis.call('PEXPIRE', key, new) else redis.call('SET', key, '', 'PX', new) end
  end
  return new
end

if now then now = tonumber(now) else
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  now = tonumber(t[1]) * 1000 + (us - us % 1000) / 1000
end
local st = redis.call('GET', key)
if alg == 1 then
  local tokens, last = a, now
  if st then
    local x, y = string.match(st, '^(%d+):(%-?%d+)$')
    tokens, last = tonumber(x), tonumber(y)
  end
  -- Refill (or, if the clock went back, take back) for the time since the last check, from
  -- empty to full at most.
  local el = now - last
  if el < -b then el = -b elseif el > b then el = b end
  tokens = tokens + el * lim
  if tokens > a then tokens = a elseif tokens < 0 then tokens = 0 end
  local need = n * per
  if n > burst or need > tokens then return -1 - tokens end
  tokens = tokens - need
  if tokens < a then
    redis.call('PSETEX', key, ttl, string.format('%d:%d', tokens, now))
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
