-- tenantry fair queue: one script, one operation per call (ARGV[1]), atomic.
-- Mirrors src/queue/memory/core: hierarchical SFQ (band -> tenant -> group -> job) with
-- cost-aware charging, caps with floor + burst pool, GCRA parking, leases with fencing tokens,
-- full-jitter retries and a per-tenant dead-letter list.
-- KEYS[1] is the shard prefix with its hash tag, e.g. "tenantry:{cpu}": every key below is
-- built from it, so one call touches one slot (Redis Cluster safe). Work per call is bounded by
-- its arguments (and fixed caps on promotion and reaping), never by the backlog.
local P = KEYS[1]
local op = ARGV[1]

-- key('gq', t, b, g) -> P:gq:t:b:g; plain concatenation (no table per call: this is hot)
local function key(a, b, c, d)
  if d ~= nil then return P .. ':' .. a .. ':' .. b .. ':' .. c .. ':' .. d end
  if c ~= nil then return P .. ':' .. a .. ':' .. b .. ':' .. c end
  if b ~= nil then return P .. ':' .. a .. ':' .. b end
  return P .. ':' .. a
end
local function num(x) return string.format('%.17g', x) end
local SHARE = {[0] = 0, [1] = 0.10 / (1 - 0.10), [2] = 0.05 / (1 - 0.05)}
local MAX_CORRECTION = 1000
local TERMINAL_TTL_MS = 86400000

local function vt(b) return tonumber(redis.call('HGET', key('vt'), b) or '0') end
local function finish(t, b) return tonumber(redis.call('HGET', key('ft'), t .. ':' .. b) or '0') end
local function pol(t, field, default) return tonumber(redis.call('HGET', key('pol'), t .. ':' .. field) or default) end
-- a tenant's whole policy in one call: weight, floor, cap, rate, rate burst
local function policy(t)
  local v = redis.call('HMGET', key('pol'), t .. ':w', t .. ':floor', t .. ':cap', t .. ':rate', t .. ':rb')
  return {w = tonumber(v[1] or '1'), floor = tonumber(v[2] or '1'), cap = tonumber(v[3] or '1000000'),
          rate = tonumber(v[4] or '0'), rb = tonumber(v[5] or '1')}
end
local function count(t, field, delta) redis.call('HINCRBY', key('cnt', t), field, delta) end
local function wake(n)
  for _ = 1, math.min(n, 64) do redis.call('LPUSH', key('wake'), '1') end
  redis.call('LTRIM', key('wake'), 0, 1023)
end

-- idle re-entry: a tenant (re)joins a band at max(V, F) unless parked
local function activate(t, b)
  if redis.call('SISMEMBER', key('capped'), t) == 1 then return end
  if redis.call('ZSCORE', key('thr'), t) then return end
  if redis.call('ZSCORE', key('act', b), t) then return end
  if redis.call('ZCARD', key('ga', t, b)) == 0 then return end
  redis.call('ZADD', key('act', b), num(math.max(vt(b), finish(t, b))), t)
end
local function unpark(t) for b = 0, 2 do activate(t, b) end end
local function deactivate(t) for b = 0, 2 do redis.call('ZREM', key('act', b), t) end end

-- Makes a job runnable. `seen` (optional, per call) remembers groups and tenants already made
-- active in this call, and `counts` collects queued-count deltas, so a batch costs less.
local function make_ready(ref, seen, counts, known)
  local jk = key('j', ref)
  local t, b, g
  if known then
    -- a fresh enqueue: the caller already wrote the job hash with state 'queued'
    t, b, g = known[1], known[2], known[3]
  else
    local f = redis.call('HMGET', jk, 't', 'b', 'g')
    t, b, g = f[1], tonumber(f[2]), f[3]
    redis.call('HSET', jk, 's', 'queued')
  end
  local seq = redis.call('INCR', key('seq'))
  redis.call('ZADD', key('gq', t, b, g), seq, ref)
  local group_key = t .. ':' .. b .. ':' .. g
  if not (seen and seen[group_key]) then
    if not redis.call('ZSCORE', key('ga', t, b), g) then
      local lvt = tonumber(redis.call('HGET', key('lvt'), t .. ':' .. b) or '0')
      local gf = tonumber(redis.call('HGET', key('gf', t, b), g) or '0')
      redis.call('ZADD', key('ga', t, b), num(math.max(lvt, gf)), g)
    end
    if seen then seen[group_key] = true end
  end
  if counts then counts[t] = (counts[t] or 0) + 1 else count(t, 'queued', 1) end
  local band_key = t .. ':' .. b
  if not (seen and seen[band_key]) then
    activate(t, b)
    if seen then seen[band_key] = true end
  end
end

local function promote_due(now)
  local due = redis.call('ZRANGEBYSCORE', key('delayed'), '-inf', now, 'LIMIT', 0, 10000)
  for _, ref in ipairs(due) do
    redis.call('ZREM', key('delayed'), ref)
    count(redis.call('HGET', key('j', ref), 't'), 'delayed', -1)
    make_ready(ref)
  end
  local thr = redis.call('ZRANGEBYSCORE', key('thr'), '-inf', now, 'LIMIT', 0, 10000)
  for _, t in ipairs(thr) do
    redis.call('ZREM', key('thr'), t)
    unpark(t)
  end
end

local function gcra(t, p, now)
  local rate = p.rate
  if rate <= 0 then return true, nil end
  local burst = math.max(p.rb, 1)
  local interval = 1000 / rate
  local tolerance = (burst - 1) * interval
  local tat = math.max(tonumber(redis.call('GET', key('gcra', t)) or now), now)
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance - interval
  if now < allow_at then return false, math.ceil(allow_at) end
  return true, new_tat
end

local function release(ref, known_tenant)
  local t = known_tenant or redis.call('HGET', key('j', ref), 't')
  redis.call('ZREM', key('leases'), ref)
  count(t, 'running', -1)
  local woke = false
  -- slots above the tenant's floor are burst slots, whichever job holds them
  local inflight = tonumber(redis.call('HGET', key('inf'), t) or '0')
  if inflight > 0 then redis.call('HINCRBY', key('inf'), t, -1) end
  if inflight > pol(t, 'floor', '1') then
    if tonumber(redis.call('GET', key('burst')) or '0') > 0 then redis.call('DECR', key('burst')) end
    -- one burst slot freed: wake one other tenant parked below its own cap
    for _, other in ipairs(redis.call('SRANDMEMBER', key('capped'), 16)) do
      if other ~= t and tonumber(redis.call('HGET', key('inf'), other) or '0') < pol(other, 'cap', '1000000') then
        redis.call('SREM', key('capped'), other)
        unpark(other)
        woke = true
        break
      end
    end
  end
  if redis.call('SREM', key('capped'), t) == 1 then
    unpark(t)
    woke = true
  end
  return woke
end

-- 'ok', 'stale' or 'notfound' for a lease (ref, token)
local function check_lease(ref, token)
  local v = redis.call('HMGET', key('j', ref), 's', 'tok')
  if not v[1] then return 'notfound' end
  if v[1] ~= 'running' or v[2] ~= token then return 'stale' end
  return 'ok'
end

local function record_attempt(ref, err, now)
  local jk = key('j', ref)
  local history = cjson.decode(redis.call('HGET', jk, 'h') or '[]')
  history[#history + 1] = {attempt = tonumber(redis.call('HGET', jk, 'a')), at_ms = now, error = string.sub(err, 1, 2000)}
  redis.call('HSET', jk, 'h', cjson.encode(history))
end

local function backoff(attempt, jitter)
  local exponent = math.min(math.max(attempt - 1, 0), 20)
  local ceiling = math.min(1000 * 2 ^ exponent, 300000)
  return math.floor(ceiling * math.min(math.max(jitter, 0), 1))
end

local function retry_or_dead_letter(ref, retryable, now, jitter)
  local jk = key('j', ref)
  local v = redis.call('HMGET', jk, 'a', 'm', 't')
  local attempt, max_attempts, t = tonumber(v[1]), tonumber(v[2]), v[3]
  if retryable and attempt < max_attempts then
    local run_at = now + backoff(attempt, jitter)
    redis.call('HSET', jk, 's', 'delayed', 'ra', run_at)
    redis.call('ZADD', key('delayed'), run_at, ref)
    count(t, 'delayed', 1)
    return {'retry', tostring(run_at), tostring(attempt)}
  end
  redis.call('HSET', jk, 's', 'dead')
  redis.call('RPUSH', key('dlq', t), ref)
  count(t, 'dead', 1)
  return {'dead', tostring(attempt)}
end

-- operations -------------------------------------------------------------------------------

if op == 'set_policy' then
  local t = ARGV[2]
  redis.call('HSET', key('pol'), t .. ':w', ARGV[3], t .. ':floor', ARGV[4], t .. ':cap', ARGV[5],
    t .. ':rate', ARGV[6], t .. ':rb', ARGV[7])
  if redis.call('SREM', key('capped'), t) == 1 then unpark(t) end
  wake(1)
  return 'ok'
end

if op == 'enqueue' then
  -- ARGV: op, now, n, then n x (id, tenant, kind, group, band, cost, max_attempts, idem, run_at, payload)
  local now, n = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out, ready, seen, counts = {}, 0, {}, {}
  for i = 0, n - 1 do
    local a = 4 + i * 10
    local id, t, idem, run_at = ARGV[a], ARGV[a + 1], ARGV[a + 7], tonumber(ARGV[a + 8])
    local ref = t .. '/' .. id
    local existing = false
    if idem ~= '' then existing = redis.call('HGET', key('idem', t), idem) end
    if existing then
      out[#out + 1] = existing; out[#out + 1] = '1'
    elseif redis.call('EXISTS', key('j', ref)) == 1 then
      out[#out + 1] = id; out[#out + 1] = '1'
    else
      if idem ~= '' then redis.call('HSET', key('idem', t), idem, id) end
      local due = run_at <= now
      redis.call('HSET', key('j', ref), 'id', id, 't', t, 'k', ARGV[a + 2], 'g', ARGV[a + 3],
        'b', ARGV[a + 4], 'c', ARGV[a + 5], 'm', ARGV[a + 6], 'a', 0, 'tok', 0, 'p', ARGV[a + 9],
        'h', '[]', 'ra', run_at, 's', due and 'queued' or 'delayed')
      if due then
        make_ready(ref, seen, counts, {t, tonumber(ARGV[a + 4]), ARGV[a + 3]})
        ready = ready + 1
      else
        redis.call('ZADD', key('delayed'), run_at, ref)
        count(t, 'delayed', 1)
      end
      out[#out + 1] = id; out[#out + 1] = '0'
    end
  end
  for t, queued in pairs(counts) do count(t, 'queued', queued) end
  if ready > 0 then wake(ready) end
  return out
end

if op == 'lease' then
  -- ARGV: op, now, max, lease_ms, burst_pool
  local now, max, lease_ms, pool = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('SET', key('lastlease'), now)
  promote_due(now)
  -- Per-call caches: everything read here is written back once at the end of the call.
  local band_size, vts, credits = {}, {}, {}
  local c = redis.call('HMGET', key('credit'), 0, 1, 2)
  local v = redis.call('HMGET', key('vt'), 0, 1, 2)
  for b = 0, 2 do
    band_size[b] = redis.call('ZCARD', key('act', b))
    credits[b] = tonumber(c[b + 1] or '0')
    vts[b] = tonumber(v[b + 1] or '0')
  end
  local burst = tonumber(redis.call('GET', key('burst')) or '0')
  local burst_start = burst
  local policies, inflight, tats, dispatched, served = {}, {}, {}, {}, {}
  local lease_pairs = {}
  local function cached_policy(t)
    if not policies[t] then policies[t] = policy(t) end
    return policies[t]
  end
  local function cached_inflight(t)
    if not inflight[t] then inflight[t] = tonumber(redis.call('HGET', key('inf'), t) or '0') end
    return inflight[t]
  end
  local function park(t)
    for b = 0, 2 do band_size[b] = band_size[b] - redis.call('ZREM', key('act', b), t) end
  end
  local function pick()
    local first = nil
    for b = 0, 2 do
      if band_size[b] > 0 then first = first or b end
    end
    if first == nil then return nil end
    for b = 2, first + 1, -1 do
      if band_size[b] > 0 and credits[b] >= 1 then
        credits[b] = credits[b] - 1
        return b
      end
    end
    for b = first + 1, 2 do
      if band_size[b] > 0 then credits[b] = math.min(credits[b] + SHARE[b], 2) end
    end
    return first
  end
  local out = {}
  local budget = max * 4 + 64
  local leased = 0
  while leased < max and budget > 0 do
    budget = budget - 1
    local b = pick()
    if b == nil then break end
    local top = redis.call('ZPOPMIN', key('act', b))
    if #top == 0 then band_size[b] = 0 else
      band_size[b] = band_size[b] - 1
      local t, start = top[1], tonumber(top[2])
      local p = cached_policy(t)
      local ok, gv = true, nil
      if p.rate > 0 then
        if tats[t] == nil then tats[t] = tonumber(redis.call('GET', key('gcra', t)) or '-1') end
        local interval = 1000 / p.rate
        local tolerance = (math.max(p.rb, 1) - 1) * interval
        local tat = math.max(tats[t] < 0 and now or tats[t], now)
        local new_tat = tat + interval
        local allow_at = new_tat - tolerance - interval
        if now < allow_at then ok, gv = false, math.ceil(allow_at) else gv = new_tat end
      end
      if not ok then
        park(t)
        redis.call('ZADD', key('thr'), gv, t)
      else
        local running = cached_inflight(t)
        local slot = nil
        if running < p.floor then slot = 0 elseif running < p.cap and burst < pool then slot = 1 end
        if slot == nil then
          park(t)
          redis.call('SADD', key('capped'), t)
        else
          if gv then tats[t] = gv end
          -- take the tenant's head job: group level first, then the group's oldest job
          local ga = key('ga', t, b)
          local gtop = redis.call('ZPOPMIN', ga)
          local g, group_start = gtop[1], tonumber(gtop[2])
          local gq = key('gq', t, b, g)
          local ref = redis.call('ZPOPMIN', gq)[1]
          local jk = key('j', ref)
          local f = redis.call('HMGET', jk, 'c', 'a', 'tok', 'id', 'k', 'm', 'p')
          local cost = math.max(tonumber(f[1]), 0)
          local lvt_field = t .. ':' .. b
          local group_finish = group_start + cost
          local has_more
          if redis.call('ZCARD', gq) > 0 then
            redis.call('ZADD', ga, num(group_finish), g)
            has_more = true
          else
            has_more = redis.call('ZCARD', ga) > 0
          end
          if has_more then
            local lvt = math.max(tonumber(redis.call('HGET', key('lvt'), lvt_field) or '0'), group_start)
            redis.call('HSET', key('lvt'), lvt_field, num(lvt))
            redis.call('HSET', key('gf', t, b), g, num(group_finish))
          else
            redis.call('DEL', key('gf', t, b))
            redis.call('HDEL', key('lvt'), lvt_field)
          end
          local finish_tag = start + cost / math.max(p.w, 1e-9)
          redis.call('HSET', key('ft'), lvt_field, num(finish_tag))
          served[t] = (served[t] or 0) + cost
          dispatched[t] = (dispatched[t] or 0) + 1
          inflight[t] = running + 1
          vts[b] = math.max(vts[b], start)
          if has_more then
            redis.call('ZADD', key('act', b), num(finish_tag), t)
            band_size[b] = band_size[b] + 1
          end
          if slot == 1 then burst = burst + 1 end
          local attempt, token = tonumber(f[2]) + 1, tonumber(f[3]) + 1
          local expiry = now + lease_ms
          redis.call('HSET', jk, 'a', attempt, 'tok', token, 's', 'running', 'le', expiry)
          lease_pairs[#lease_pairs + 1] = expiry
          lease_pairs[#lease_pairs + 1] = ref
          for _, field in ipairs({f[4], t, f[5], tostring(token), tostring(attempt), f[6], f[7], tostring(expiry)}) do
            out[#out + 1] = field
          end
          leased = leased + 1
        end
      end
    end
  end
  -- write back what the caches changed
  for i = 1, #lease_pairs, 400 do
    redis.call('ZADD', key('leases'), unpack(lease_pairs, i, math.min(i + 399, #lease_pairs)))
  end
  for t, n in pairs(dispatched) do
    redis.call('HINCRBY', key('inf'), t, n)
    redis.call('HINCRBY', key('cnt', t), 'queued', -n)
    redis.call('HINCRBY', key('cnt', t), 'running', n)
    redis.call('HINCRBYFLOAT', key('served'), t, num(served[t]))
  end
  for t, tat in pairs(tats) do
    if tat >= 0 then redis.call('SET', key('gcra', t), num(tat), 'PX', math.max(math.ceil(tat - now), 0) + 1) end
  end
  redis.call('HSET', key('vt'), 0, num(vts[0]), 1, num(vts[1]), 2, num(vts[2]))
  redis.call('HSET', key('credit'), 0, num(credits[0]), 1, num(credits[1]), 2, num(credits[2]))
  if burst ~= burst_start then redis.call('SET', key('burst'), burst) end
  return out
end

if op == 'heartbeat' then
  local ref, token, expiry = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local status = check_lease(ref, token)
  if status ~= 'ok' then return status end
  redis.call('HSET', key('j', ref), 'le', expiry)
  redis.call('ZADD', key('leases'), expiry, ref)
  return 'ok'
end

local function complete(ref, token, measured)
  local jk = key('j', ref)
  local v = redis.call('HMGET', jk, 's', 'tok', 't', 'b', 'c')
  if not v[1] then return 'notfound', false end
  if v[1] ~= 'running' or v[2] ~= token then return 'stale', false end
  redis.call('HSET', jk, 's', 'succeeded')
  local t, b, estimate = v[3], tonumber(v[4]), math.max(tonumber(v[5]), 0)
  local correction = math.max(-MAX_CORRECTION, math.min(MAX_CORRECTION, math.max(measured, 0) - estimate))
  if correction ~= 0 then
    local delta = correction / math.max(pol(t, 'w', '1'), 1e-9)
    redis.call('HSET', key('ft'), t .. ':' .. b, num(finish(t, b) + delta))
    redis.call('HINCRBYFLOAT', key('served'), t, num(correction))
    local tag = redis.call('ZSCORE', key('act', b), t)
    if tag then redis.call('ZADD', key('act', b), num(math.max(tonumber(tag) + delta, vt(b))), t) end
  end
  local woke = release(ref, t)
  redis.call('PEXPIRE', jk, TERMINAL_TTL_MS)
  return 'ok', woke
end

if op == 'complete' then
  local status, woke = complete(ARGV[2], ARGV[3], tonumber(ARGV[4]))
  if woke then wake(1) end
  return status
end

if op == 'complete_many' then
  -- ARGV: op, n, then n x (ref, token, measured); returns one status per lease
  local n, out, woken = tonumber(ARGV[2]), {}, 0
  for i = 0, n - 1 do
    local a = 3 + i * 3
    local status, woke = complete(ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]))
    out[#out + 1] = status
    if woke then woken = woken + 1 end
  end
  if woken > 0 then wake(woken) end
  return out
end

if op == 'fail' then
  local ref, token, err, retryable, now, jitter = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
  local status = check_lease(ref, token)
  if status ~= 'ok' then return {status} end
  record_attempt(ref, err, now)
  release(ref)
  wake(1)
  return retry_or_dead_letter(ref, retryable, now, jitter)
end

if op == 'reap' then
  -- ARGV: op, now, jitter seed; returns flat (id, tenant, outcome...) x n, padded to 5 fields
  local now, seed = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out = {}
  local expired = redis.call('ZRANGEBYSCORE', key('leases'), '-inf', now, 'LIMIT', 0, 1000)
  for _, ref in ipairs(expired) do
    local jk = key('j', ref)
    local v = redis.call('HMGET', jk, 'id', 't', 'a')
    redis.call('HINCRBY', jk, 'tok', 1)
    record_attempt(ref, 'lease expired on attempt ' .. v[3] .. ': worker lost', now)
    release(ref)
    seed = (seed * 1103515245 + 12345) % 2147483648
    local outcome = retry_or_dead_letter(ref, true, now, seed / 2147483648)
    out[#out + 1] = v[1]; out[#out + 1] = v[2]
    out[#out + 1] = outcome[1]; out[#out + 1] = outcome[2]; out[#out + 1] = outcome[3] or ''
  end
  if #expired > 0 then wake(#expired) end
  return out
end

if op == 'cancel' then
  local ref = ARGV[2]
  local jk = key('j', ref)
  local v = redis.call('HMGET', jk, 's', 't', 'b', 'g')
  local s, t, b, g = v[1], v[2], v[3], v[4]
  if not s then return '' end
  if s == 'queued' then
    local gq = key('gq', t, b, g)
    redis.call('ZREM', gq, ref)
    if redis.call('ZCARD', gq) == 0 then redis.call('ZREM', key('ga', t, b), g) end
    if redis.call('ZCARD', key('ga', t, b)) == 0 then redis.call('ZREM', key('act', b), t) end
    count(t, 'queued', -1)
  elseif s == 'delayed' then
    redis.call('ZREM', key('delayed'), ref)
    count(t, 'delayed', -1)
  elseif s == 'running' then
    redis.call('HINCRBY', jk, 'tok', 1)
    release(ref)
    wake(1)
  else
    return s
  end
  redis.call('HSET', jk, 's', 'cancelled')
  redis.call('PEXPIRE', jk, TERMINAL_TTL_MS)
  return s
end

if op == 'state' then
  return redis.call('HGET', key('j', ARGV[2]), 's') or ''
end

if op == 'dead_letters' then
  local out = {}
  for _, ref in ipairs(redis.call('LRANGE', key('dlq', ARGV[2]), 0, 9999)) do
    local v = redis.call('HMGET', key('j', ref), 'id', 'k', 'h')
    out[#out + 1] = v[1]; out[#out + 1] = v[2]; out[#out + 1] = v[3]
  end
  return out
end

if op == 'redrive' then
  local ref = ARGV[2]
  local jk = key('j', ref)
  local v = redis.call('HMGET', jk, 's', 't')
  if v[1] ~= 'dead' then return 0 end
  redis.call('LREM', key('dlq', v[2]), 0, ref)
  count(v[2], 'dead', -1)
  redis.call('HSET', jk, 'a', 0)
  make_ready(ref)
  wake(1)
  return 1
end

if op == 'explain' then
  -- returns: state, run_at, position, tenant tag, V, blocker kind, n1, n2, n3
  local ref, now = ARGV[2], tonumber(ARGV[3])
  local jk = key('j', ref)
  local v = redis.call('HMGET', jk, 's', 't', 'b', 'g', 'ra')
  local s, t, b = v[1], v[2], tonumber(v[3])
  if not s then return {} end
  local tag = redis.call('ZSCORE', key('act', b), t) or ''
  local out = {s, v[5], '', tag, num(vt(b)), '', '', '', ''}
  if s ~= 'queued' then return out end
  local seq = tonumber(redis.call('ZSCORE', key('gq', t, b, v[4]), ref))
  local ahead = 0
  for _, g in ipairs(redis.call('ZRANGE', key('ga', t, b), 0, 999)) do
    ahead = ahead + redis.call('ZCOUNT', key('gq', t, b, g), '-inf', '(' .. seq)
  end
  out[3] = tostring(ahead)
  local last = redis.call('GET', key('lastlease'))
  local throttled = redis.call('ZSCORE', key('thr'), t)
  if redis.call('SISMEMBER', key('capped'), t) == 1 then
    out[6] = 'cap'
    out[7] = redis.call('HGET', key('inf'), t) or '0'
    out[8] = tostring(pol(t, 'cap', '1000000')); out[9] = tostring(pol(t, 'floor', '1'))
  elseif throttled then
    out[6] = 'rate_limit'; out[7] = throttled
  elseif (not last) or now - tonumber(last) > 5000 then
    out[6] = 'no_worker'
  else
    local higher = false
    for hb = 0, b - 1 do
      if redis.call('ZCARD', key('act', hb)) > 0 then higher = true end
    end
    if higher then out[6] = 'band'; out[7] = tostring(b) else out[6] = 'none' end
  end
  return out
end

if op == 'forget_tenant' then
  -- Cancels and deletes up to 1,000 of the tenant's jobs per call; returns {done, cancelled}.
  local t = ARGV[2]
  local cancelled, budget = 0, 1000
  for b = 0, 2 do
    for _, g in ipairs(redis.call('ZRANGE', key('ga', t, b), 0, -1)) do
      local gq = key('gq', t, b, g)
      for _, ref in ipairs(redis.call('ZRANGE', gq, 0, budget - 1)) do
        redis.call('ZREM', gq, ref)
        redis.call('DEL', key('j', ref))
        cancelled = cancelled + 1
        budget = budget - 1
      end
      if redis.call('ZCARD', gq) == 0 then redis.call('ZREM', key('ga', t, b), g) end
      if budget <= 0 then return {0, cancelled} end
    end
  end
  -- delayed and running jobs are found through the shared indexes by their tenant prefix
  for _, index in ipairs({'delayed', 'leases'}) do
    local cursor = '0'
    repeat
      local page = redis.call('ZSCAN', key(index), cursor, 'MATCH', t .. '/*', 'COUNT', 1000)
      cursor = page[1]
      for i = 1, #page[2], 2 do
        local ref = page[2][i]
        if index == 'leases' then
          redis.call('HINCRBY', key('j', ref), 'tok', 1)
          release(ref, t)
        end
        redis.call('ZREM', key(index), ref)
        redis.call('DEL', key('j', ref))
        cancelled = cancelled + 1
        budget = budget - 1
      end
    until cursor == '0' or budget <= 0
    if budget <= 0 then return {0, cancelled} end
  end
  for _, ref in ipairs(redis.call('LRANGE', key('dlq', t), 0, -1)) do redis.call('DEL', key('j', ref)) end
  redis.call('DEL', key('dlq', t), key('idem', t), key('cnt', t), key('gcra', t))
  for b = 0, 2 do
    redis.call('ZREM', key('act', b), t)
    redis.call('DEL', key('ga', t, b), key('gf', t, b))
  end
  redis.call('HDEL', key('ft'), t .. ':0', t .. ':1', t .. ':2')
  redis.call('HDEL', key('lvt'), t .. ':0', t .. ':1', t .. ':2')
  redis.call('HDEL', key('pol'), t .. ':w', t .. ':floor', t .. ':cap', t .. ':rate', t .. ':rb')
  redis.call('HDEL', key('served'), t)
  redis.call('HDEL', key('inf'), t)
  redis.call('SREM', key('capped'), t)
  redis.call('ZREM', key('thr'), t)
  return {1, cancelled}
end

if op == 'stats' then
  local t = ARGV[2]
  local c = redis.call('HMGET', key('cnt', t), 'queued', 'running', 'delayed', 'dead')
  local parked = ''
  if redis.call('SISMEMBER', key('capped'), t) == 1 then parked = 'capped'
  elseif redis.call('ZSCORE', key('thr'), t) then parked = 'throttled' end
  return {c[1] or '0', c[2] or '0', c[3] or '0', c[4] or '0', parked, redis.call('HGET', key('served'), t) or '0'}
end

return redis.error_reply('unknown queue operation ' .. tostring(op))
