-- fieldlab rate limit: one atomic check of every limit of a policy.
-- The semantics and the arithmetic are those of crates/ratelimit/src/algo.rs, in integers, so
-- this script and the in-process code decide identically (tests compare them).
--
-- KEYS[i]: state of limit i (all keys of one check share the hash tag {key}: one Cluster slot).
-- ARGV[1]: now in ms, or '' to use the Redis server clock (TIME) -- the normal case, so every
--          instance uses one clock. ARGV[2]: units requested. ARGV[3]: lease id (concurrency,
--          and a unique member for the sliding log).
-- ARGV[4 + 5*(i-1) ..]: algorithm code, limit, period_ms, burst, max_delay_ms of limit i; the
--          code + 10 for a token bucket or GCRA limit whose state is the key's expiry.
-- Returns 6 integers per limit: allowed (1/0), quota, remaining, retry_after_ms (-1: never),
-- reset_ms, delay_ms. Nothing is written unless every limit allows.
--
-- State: token bucket "tokens:last", GCRA and leaky bucket "tat", fixed window and sliding
-- counter "start:curr:prev", each one string written with SET .. PX (state and expiry in one
-- call); the sliding log is a sorted set and the concurrency limit a hash. A token bucket or
-- GCRA limit whose time per unit is a whole number of ms keeps its one instant (full again, the
-- tat) as the key's expiry instead, read with PTTL (see single.lua). This script runs on
-- every check, so it does the least it can: one read and one write per limit (plus TIME).
-- A policy of one token bucket or one GCRA limit (most policies) runs single.lua instead, a
-- script specialised to that limit; this one handles every other policy and composites.

local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return idiv(a + b - 1, b) end
local function ceil_us_ms(us) if us <= 0 then return 0 end return cdiv(us, 1000) end
local fmt, match = string.format, string.match
local function max(a, b) if a > b then return a end return b end
local function min(a, b) if a < b then return a end return b end

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + idiv(tonumber(t[2]), 1000)
end
local lease = ARGV[3]

-- How far the instant a limit keeps as its key's expiry is ahead of now, in ms (>= 0): the
-- key's TTL on the server clock; with a test clock, its absolute expiry minus now.
local function held_ms(key)
  local h
  if ARGV[1] ~= '' then
    h = redis.call('PEXPIRETIME', key)
    if h >= 0 then h = h - now end
  else
    h = redis.call('PTTL', key)
  end
  if h < 0 then return 0 end
  return h
end

-- Decide limit i for n units. Returns the decision, then how to write the new state: kind
-- 's' (SET the string v), 'e' (the key's expiry, `reset` ms from now), 'z' (ZADD score v,
-- member w) or 'h' (HSET field w to v).
local function check(i, n)
  local b = 3 + (i - 1) * 5
  local alg = tonumber(ARGV[b + 1])
  local expiry = alg > 10
  if expiry then alg = alg - 10 end
  local lim = tonumber(ARGV[b + 2])
  local per = tonumber(ARGV[b + 3])
  local burst = tonumber(ARGV[b + 4])
  local maxd = tonumber(ARGV[b + 5])
  local key = KEYS[i]
  local allowed, quota, remaining, retry, reset, delay = false, lim, 0, 0, 0, 0
  local kind, v, w = 's', nil, nil

  if alg == 1 then -- token bucket
    local cap = burst * per
    local full_after = cdiv(cap, lim)
    local tokens, last = cap, now
    if expiry then
      -- Full again in h ms: short of full by h ms of refill, never below empty.
      tokens = cap - min(held_ms(key), full_after) * lim
    else
      local st = redis.call('GET', key)
      if st then
        local a, b2 = match(st, '^(%d+):(%-?%d+)$')
        tokens, last = tonumber(a), tonumber(b2)
      end
    end
    -- Refill (or, if the clock went back, take back) for the time since, empty to full at most.
    local el = min(max(now - last, -full_after), full_after)
    tokens = min(cap, max(0, tokens + el * lim))
    last = now
    local need = n * per
    allowed = n <= burst and need <= tokens
    if allowed then tokens = tokens - need end
    quota = burst
    remaining = idiv(tokens, per)
    if allowed then retry = 0 elseif n > burst then retry = -1 else retry = cdiv(need - tokens, lim) end
    reset = cdiv(cap - tokens, lim)
    if expiry then kind = 'e' else v = fmt('%d:%d', tokens, last) end

  elseif alg == 2 or alg == 6 then -- gcra, leaky bucket (both: one time in µs)
    local t = cdiv(per * 1000, lim)
    local nowu = now * 1000
    local tat
    if expiry then tat = nowu + held_ms(key) * 1000 else tat = tonumber(redis.call('GET', key)) or nowu end
    if alg == 2 then
      local tol = burst * t
      local new_tat = max(tat, nowu) + n * t
      allowed = n <= burst and new_tat - nowu <= tol
      if allowed then tat = new_tat end
      local held = max(tat, nowu) - nowu
      quota = burst
      remaining = max(idiv(tol - held, t), 0)
      if allowed then retry = 0 elseif n > burst then retry = -1 else retry = ceil_us_ms(new_tat - nowu - tol) end
      reset = ceil_us_ms(held)
      if expiry then kind = 'e' else v = fmt('%d', tat) end
    else
      local md = maxd * 1000
      local at = max(tat, nowu)
      local d = at - nowu
      allowed = d <= md
      if allowed then tat = at + n * t end
      local backlog = max(tat, nowu) - nowu
      quota = idiv(md, t) + 1
      if backlog <= md then remaining = idiv(md - backlog, t) + 1 else remaining = 0 end
      if allowed then retry = 0; delay = ceil_us_ms(d) else retry = ceil_us_ms(d - md) end
      reset = ceil_us_ms(backlog)
      v = fmt('%d', tat)
    end

  elseif alg == 3 or alg == 5 then -- fixed window, sliding-window counter
    local st = redis.call('GET', key)
    local start = idiv(now, per) * per
    local ws, curr, prev = -1, 0, 0
    if st then
      local a, b2, c = match(st, '^(%-?%d+):(%d+):(%d+)$')
      ws, curr, prev = tonumber(a), tonumber(b2), tonumber(c)
    end
    if ws < 0 then ws = start end
    if start > ws then
      if alg == 5 and start - ws == per then prev = curr else prev = 0 end
      curr = 0
      ws = start
    end
    local to_end = max(ws + per - now, 0)
    if alg == 3 then
      allowed = curr + n <= lim
      if allowed then curr = curr + n end
      remaining = lim - curr
      if allowed then retry = 0 elseif n > lim then retry = -1 else retry = to_end end
      if curr == 0 then reset = 0 else reset = to_end end
    else
      local e = min(max(now - ws, 0), per)
      local wp = prev * (per - e)
      allowed = wp + (curr + n) * per <= lim * per
      if allowed then curr = curr + n end
      remaining = idiv(max(lim * per - (wp + curr * per), 0), per)
      if allowed then retry = 0
      elseif n > lim then retry = -1
      elseif curr + n <= lim then retry = max((per - idiv((lim - curr - n) * per, prev)) - e, 0)
      else
        local need = 0
        if curr > 0 then need = max(per - idiv((lim - n) * per, curr), 0) end
        retry = to_end + need
      end
      if curr > 0 then reset = to_end + per elseif prev > 0 then reset = to_end else reset = 0 end
    end
    v = fmt('%d:%d:%d', ws, curr, prev)

  elseif alg == 4 then -- sliding-window log: zset of "<units>:<lease>" scored by time
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local t = now
    if newest[2] then t = max(t, tonumber(newest[2])) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt('%d', t - per))
    local ents = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local sum = 0
    for j = 1, #ents, 2 do sum = sum + tonumber(string.match(ents[j], '^(%d+):')) end
    allowed = sum + n <= lim
    if allowed then
      if n > 0 then sum = sum + n end
      retry = 0
    elseif n > lim then
      retry = -1
    else
      local freed, at = 0, t
      for j = 1, #ents, 2 do
        freed = freed + tonumber(string.match(ents[j], '^(%d+):'))
        at = tonumber(ents[j + 1]) + per
        if sum - freed + n <= lim then break end
      end
      retry = max(at - now, 0)
    end
    remaining = lim - sum
    local last = t
    if not allowed or n == 0 then
      if newest[2] and #ents > 0 then last = tonumber(ents[#ents]) else last = nil end
    end
    if last then reset = max(last + per - now, 0) else reset = 0 end
    kind, v, w = 'z', fmt('%d', t), fmt('%d:', n) .. lease

  elseif alg == 7 then -- concurrency: hash lease -> "<expiry>:<units>"
    local all_l = redis.call('HGETALL', key)
    local used, first, last, has = 0, nil, nil, false
    for j = 1, #all_l, 2 do
      local e, k = string.match(all_l[j + 1], '^(-?%d+):(%d+)$')
      e = tonumber(e); k = tonumber(k)
      if e <= now then
        redis.call('HDEL', key, all_l[j])
      else
        used = used + k
        if all_l[j] == lease then has = true end
        if first == nil or e < first then first = e end
        if last == nil or e > last then last = e end
      end
    end
    allowed = used + n <= lim and not has
    local exp = now + per
    if allowed and n > 0 then
      used = used + n
      if first == nil or exp < first then first = exp end
      if last == nil or exp > last then last = exp end
    end
    remaining = lim - used
    if allowed then retry = 0 elseif n > lim then retry = -1 elseif first then retry = first - now else retry = 0 end
    if last then reset = last - now else reset = 0 end
    kind, v, w = 'h', fmt('%d:%d', exp, n), lease
  else
    return redis.error_reply('unknown algorithm code ' .. tostring(alg))
  end

  return allowed, quota, remaining, retry, reset, delay, kind, v, w
end

-- Write limit i's new state (an allowed check). A state past its reset is the same as no
-- state: Redis forgets it then (bounded memory).
local function write(i, n, reset, kind, v, w)
  local key = KEYS[i]
  if kind == 'e' then -- the state is the key's expiry, `reset` ms from now
    if reset <= 0 then redis.call('DEL', key)
    elseif ARGV[1] ~= '' then redis.call('SET', key, '', 'PXAT', now + reset)
    else redis.call('SET', key, '', 'PX', reset) end
    return
  end
  if kind == 's' then
    if reset > 0 then redis.call('SET', key, v, 'PX', reset + 1000) else redis.call('DEL', key) end
    return
  end
  if n > 0 then
    if kind == 'z' then redis.call('ZADD', key, v, w) else redis.call('HSET', key, w, v) end
  end
  if reset > 0 then redis.call('PEXPIRE', key, reset + 1000) else redis.call('DEL', key) end
end

local n = tonumber(ARGV[2])
if #KEYS == 1 then
  local allowed, quota, remaining, retry, reset, delay, kind, v, w = check(1, n)
  local r = 0
  if allowed then
    r = 1
    write(1, n, reset, kind, v, w)
  end
  return {r, quota, remaining, retry, reset, delay}
end

local out, pending, resets, oks = {}, {}, {}, {}
local all = true
for i = 1, #KEYS do
  local allowed, quota, remaining, retry, reset, delay, kind, v, w = check(i, n)
  if not allowed then all = false end
  oks[i], resets[i], pending[i] = allowed, reset, {kind, v, w}
  local r = 0
  if allowed then r = 1 end
  local o = (i - 1) * 6
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] =
    r, quota, remaining, retry, reset, delay
end

if all then
  for i = 1, #KEYS do
    local p = pending[i]
    write(i, n, resets[i], p[1], p[2], p[3])
  end
else
  -- Composite rejected: nothing is consumed. Report what the passing limits really have left,
  -- by deciding 0 units (exactly as the in-process code does).
  for i = 1, #KEYS do
    if oks[i] then
      local _, _, remaining, _, reset = check(i, 0)
      local o = (i - 1) * 6
      out[o + 3], out[o + 5], out[o + 6] = remaining, reset, 0
    end
  end
end
return out
