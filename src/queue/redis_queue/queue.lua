-- tenantry fair queue: one script, one operation per call (ARGV[1]), atomic.
-- Mirrors src/queue/memory/core: hierarchical SFQ (band -> tenant -> group -> job) with
-- cost-aware charging, caps with floor + burst pool, GCRA parking, leases with fencing tokens,
-- full-jitter retries and a per-tenant dead-letter list.
-- KEYS[1] is the shard prefix with its hash tag, e.g. "tenantry:{cpu}": every key below is
-- built from it, so one call touches one slot (Redis Cluster safe). Work per call is bounded by
-- its arguments (and fixed caps on promotion and reaping), never by the backlog.
--
-- A tenant's scheduling state is one hash, tn:<tenant>, so a dispatch reads and writes it once:
--   w floor cap rate rb   policy: weight, guaranteed slots, slot cap, rate (jobs/s), rate burst
--   inf                   slots held (leased and not yet released)
--   q0 q1 q2              queued jobs per band; 0 exactly when the tenant has no group in the
--                         band, so an enqueue learns from its HINCRBY whether the tenant (and
--                         every group of it) enters the band afresh
--   dl dead               delayed and dead-lettered job counts
--   sv                    cost served
--   tat                   GCRA theoretical arrival time (ms)
--   l0 l1 l2, f0 f1 f2    per band: local virtual time of the group level, the tenant's finish tag
--   pk                    why the tenant is parked ('cap' or 'rate'); mirrors the capped set and
--                         the thr index, which stay for wake-ups and timed promotion
--   layout                a long constant that keeps the hash a hash table (see LAYOUT)
-- Per tenant and band, ga:<t>:<b> orders the tenant's non-empty groups by start tag, and
-- gf:<t>:<b> keeps the finish tag of each group that emptied while the tenant stayed in the
-- band (a busy group's finish tag is its score in ga); both start afresh when the tenant
-- leaves the band.
--
-- A job is the hash j:<tenant>/<id>: state at rest s, estimated cost c, its record d (max
-- attempts, payload and kind, packed by the client: "<max>\n<payload>\n<kind>", opaque here
-- but for the leading number), band b, group g, and, once they have something to say,
-- attempts a, run_at ra (a delayed job) and the attempt history h (JSON). The tenant and id
-- are the reference's two halves.
-- A queued job's reference sits in its group's FIFO gq:<t>:<b>:<g>; a running one in the
-- leases index, scored by lease expiry, and in the lease table lt (reference -> "<token>
-- <band> <attempt> <cost>"), which is the fencing check: a lease is current exactly while lt
-- holds its token. Tokens come from one shard counter, so a job's next lease always has a
-- larger one. A lease does not write the job's hash: while lt holds the job it is running
-- (its hash still says 'queued'), and the attempt is written back when the lease ends
-- without success. A delayed job sits in the delayed index; a succeeded one only in the done
-- sets (see DONE_GENERATION).
--
-- Costs that dominate a dispatch, and what this script does about them:
-- * number-to-string conversions: Lua formats a number passed to redis.call, or concatenated
--   into a key, with "%.17g". Bands enter keys as the strings of BS, integers are formatted
--   once with "%d" (int), and only virtual-time tags, which need every digit, use num.
-- * encodings that scan: act:<b> and tn:<t> are kept in their hashed encodings (see SENTINEL
--   and LAYOUT), so a lookup does not walk and parse every entry of a small listpack.
-- * existence checks use ZRANK, whose integer reply is cheaper than ZSCORE's double.
-- * Redis calls per job, each of which costs more in argument and reply conversion than most
--   commands cost to run: a lease writes nothing per job but one entry each in the leases
--   index and the lease table, both sent once per call; a completion checks a whole batch
--   with one read of the lease table and deletes it with one call per structure; an
--   enqueue learns from one HINCRBY per tenant and band whether that tenant starts afresh
--   there, and then places its groups without asking whether each is already placed.
-- Globals used on hot paths, bound to locals once (a local is a register; a global is a
-- table lookup on every use).
local call, tonumber, tostring, unpack, pairs, ipairs = redis.call, tonumber, tostring, unpack, pairs, ipairs
local max, min = math.max, math.min
local P = KEYS[1]
local op = ARGV[1]
local BS = {[0] = '0', '1', '2'}

-- key('gq', t, b, g) -> P:gq:t:b:g; plain concatenation (no table per call: this is hot). A band
-- number becomes its string here, not through Lua's number formatting.
local function key(a, b, c, d)
  if d ~= nil then return P .. ':' .. a .. ':' .. b .. ':' .. (BS[c] or c) .. ':' .. d end
  if c ~= nil then return P .. ':' .. a .. ':' .. b .. ':' .. (BS[c] or c) end
  if b ~= nil then return P .. ':' .. a .. ':' .. (BS[b] or b) end
  return P .. ':' .. a
end
-- the band tenant sets, named once per call
local ACT = {[0] = key('act', 0), key('act', 1), key('act', 2)}
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local SHARE = {[0] = 0, [1] = 0.10 / (1 - 0.10), [2] = 0.05 / (1 - 0.05)}
local MAX_CORRECTION = 1000
local TERMINAL_TTL_MS = 86400000
-- A succeeded job's hash is deleted at completion; its reference goes to the shard's current
-- done set, so `state`, a repeated enqueue and a late completion still know it. There are two
-- generations, done:0 and done:1 (plain sets: adding is O(1)); 'donemeta' says which is current
-- and since when. When the current one holds DONE_GENERATION references or is DONE_AGE_MS old,
-- the older one is unlinked (freed off the main thread) and becomes the new current one. So a
-- completion is remembered through the next generation: at least the next DONE_GENERATION
-- completions or DONE_AGE_MS, whichever comes first, and memory stays bounded (two sets of at
-- most DONE_GENERATION references plus one call's worth).
local DONE_GENERATION = 500000
local DONE_AGE_MS = 43200000
local BAND_L = {[0] = 'l0', 'l1', 'l2'}
local BAND_F = {[0] = 'f0', 'f1', 'f2'}
local BAND_Q = {[0] = 'q0', 'q1', 'q2'}
-- Every band's tenant set act:<b> holds this member at +inf. A member longer than 64 bytes
-- keeps the sorted set in its skiplist encoding: a small set (up to 128 tenants) would
-- otherwise be a listpack, where every ZADD scans the entries and parses their scores, and
-- that scan dominated dispatch. Tenant ids are at most 40 bytes of [a-z0-9-], so it cannot
-- collide, and its infinite score keeps it behind every tenant.
local SENTINEL = string.rep('~', 65)
-- Likewise a tenant hash tn:<t> carries the field 'layout' with a value longer than 64 bytes,
-- which keeps it a hash table: a dispatch reads about a dozen of its fields and writes half of
-- them, and in a listpack every one of those lookups walks the whole hash.
local LAYOUT = string.rep('h', 65)

-- A reference is "<tenant>/<id>".
local function tenant_of(ref) return string.match(ref, '^[^/]*') end
local function id_of(ref) return string.match(ref, '/(.*)$') end

-- Band virtual times, read at most once per call (only `lease` changes them, at its end).
local vt_cache = {}
local function vt(b)
  local v = vt_cache[b]
  if v == nil then
    v = tonumber(call('HGET', key('vt'), BS[b]) or '0')
    vt_cache[b] = v
  end
  return v
end
local function wake(n)
  local tokens = {}
  for i = 1, min(n, 64) do tokens[i] = '1' end
  call('LPUSH', key('wake'), unpack(tokens))
  call('LTRIM', key('wake'), 0, 1023)
end
-- HSET / HDEL / ZREM of many arguments, in chunks that stay inside Lua's unpack limit
local function many(command, k, flat)
  for i = 1, #flat, 800 do
    call(command, k, unpack(flat, i, min(i + 799, #flat)))
  end
end

-- A tenant's per-band tags and park reason, read in one call (read-only use).
local function tags(t)
  local v = call('HMGET', key('tn', t), 'l0', 'l1', 'l2', 'f0', 'f1', 'f2', 'pk')
  return {
    l = {[0] = tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')},
    f = {[0] = tonumber(v[4] or '0'), tonumber(v[5] or '0'), tonumber(v[6] or '0')},
    pk = v[7],
  }
end
-- `ctx.states` caches tags for the length of one operation that does not change them.
local function tags_of(t, ctx)
  if not ctx then return tags(t) end
  local st = ctx.states[t]
  if not st then
    st = tags(t)
    ctx.states[t] = st
  end
  return st
end

-- idle re-entry: a tenant (re)joins a band at max(V, F) unless parked or without groups there.
local function activate(t, b, ctx)
  if call('ZRANK', ACT[b], t) then return end
  local st = tags_of(t, ctx)
  if st.pk then return end
  if call('ZCARD', key('ga', t, b)) == 0 then return end
  call('ZADD', ACT[b], num(max(vt(b), st.f[b])), t)
end
-- the caller has cleared the park reason
local function unpark(t)
  local ctx = {states = {}}
  for b = 0, 2 do activate(t, b, ctx) end
end
local function unpark_capped(t)
  call('SREM', key('capped'), t)
  call('HDEL', key('tn', t), 'pk')
  unpark(t)
end

-- Per-call batch context: tags read, groups already placed this call, delayed-count deltas,
-- and sequence numbers reserved in one INCRBY.
local function batch(n)
  return {seen = {}, delayed = {}, states = {}, seq = call('INCRBY', key('seq'), int(n)) - n + 1}
end
local function flush_delayed(ctx)
  for t, delayed in pairs(ctx.delayed) do call('HINCRBY', key('tn', t), 'dl', int(delayed)) end
end

-- Makes jobs runnable; `jobs` is a list of {reference, tenant, band, group}. Each tenant's
-- queued count in a band is raised once, and HINCRBY's answer says whether the tenant enters
-- the band afresh (it had nothing queued there). Then its groups start at 0 with no
-- membership checks (its group level starts afresh, see `lease`), and it joins the band at
-- max(V, F) unless parked (idle re-entry). Otherwise a group not yet in ga joins at
-- max(the tenant's local time, the group's last finish tag), and the tenant's place in the
-- band is checked. ZADD NX keeps any place already held, so a count that is off can cost a
-- check (or let a new group start early within its tenant) but never strands anyone.
local function ready_many(jobs, ctx)
  local per_band, order = {}, {}
  for _, job in ipairs(jobs) do
    local tb = job[2] .. ':' .. BS[job[3]]
    local entry = per_band[tb]
    if not entry then
      entry = {t = job[2], b = job[3], n = 0, tb = tb, ga = key('ga', tb)}
      per_band[tb] = entry
      order[#order + 1] = entry
    end
    entry.n = entry.n + 1
    job[5] = entry
  end
  for _, entry in ipairs(order) do
    entry.fresh = call('HINCRBY', key('tn', entry.t), BAND_Q[entry.b], int(entry.n)) <= entry.n
  end
  for _, job in ipairs(jobs) do
    local ref, g, entry = job[1], job[4], job[5]
    local seq = ctx.seq
    ctx.seq = seq + 1
    call('ZADD', key('gq', entry.tb, g), int(seq), ref)
    local group_key = entry.tb .. ':' .. g
    if not ctx.seen[group_key] then
      ctx.seen[group_key] = true
      if entry.fresh then
        call('ZADD', entry.ga, 'NX', '0', g)
      elseif not call('ZRANK', entry.ga, g) then
        local lvt = tags_of(entry.t, ctx).l[entry.b]
        local gf = tonumber(call('HGET', key('gf', entry.tb), g) or '0')
        call('ZADD', entry.ga, num(max(lvt, gf)), g)
        entry.placed = true
      end
    end
  end
  for _, entry in ipairs(order) do
    if entry.fresh then
      local st = tags_of(entry.t, ctx)
      if not st.pk then
        call('ZADD', ACT[entry.b], 'NX', num(max(vt(entry.b), st.f[entry.b])), entry.t)
      end
    elseif entry.placed then
      -- a tenant with queued work is in the band or parked; checked whenever a new group
      -- appears, so that a count that is too high cannot leave it out
      activate(entry.t, entry.b, ctx)
    end
  end
end

-- Queues jobs that were delayed or dead-lettered again.
local function requeue(refs, ctx, from_delayed)
  local jobs = {}
  for _, ref in ipairs(refs) do
    local jk = key('j', ref)
    local f = call('HMGET', jk, 'b', 'g')
    if f[1] then
      local t = tenant_of(ref)
      call('HSET', jk, 's', 'queued')
      jobs[#jobs + 1] = {ref, t, tonumber(f[1]), f[2]}
      if from_delayed then ctx.delayed[t] = (ctx.delayed[t] or 0) - 1 end
    end
  end
  ready_many(jobs, ctx)
end

local function promote_due(now)
  local due = call('ZRANGEBYSCORE', key('delayed'), '-inf', now, 'LIMIT', 0, 10000)
  if #due > 0 then
    local ctx = batch(#due)
    many('ZREM', key('delayed'), due)
    requeue(due, ctx, true)
    flush_delayed(ctx)
  end
  local thr = call('ZRANGEBYSCORE', key('thr'), '-inf', now, 'LIMIT', 0, 10000)
  for _, t in ipairs(thr) do
    call('ZREM', key('thr'), t)
    call('HDEL', key('tn', t), 'pk')
    unpark(t)
  end
end

-- Gives back slots: `counts` maps tenant -> slots, `order` lists those tenants (their lease
-- entries are removed by the caller). Burst slots (those above a tenant's floor) go back to
-- the shared pool in one step, and each wakes one other tenant parked below its own cap; a
-- tenant parked at its own cap is woken by its own release. Returns how many were woken.
local function release_slots(counts, order)
  local woken, freed_total = 0, 0
  for _, t in ipairs(order) do
    local k = counts[t]
    local tk = key('tn', t)
    local v = call('HMGET', tk, 'inf', 'floor', 'pk')
    local inflight, floor = tonumber(v[1] or '0'), tonumber(v[2] or '1')
    local taken = min(k, inflight)
    if taken > 0 then call('HINCRBY', tk, 'inf', int(-taken)) end
    local freed = min(k, inflight - floor)
    if freed > 0 then freed_total = freed_total + freed end
    if v[3] == 'cap' then
      unpark_capped(t)
      woken = woken + 1
    end
  end
  if freed_total > 0 then
    local burst = tonumber(call('GET', key('burst')) or '0')
    if burst > 0 then call('DECRBY', key('burst'), int(min(burst, freed_total))) end
    local others = 0
    local sample = min(max(2 * freed_total, 16), 256)
    for _, other in ipairs(call('SRANDMEMBER', key('capped'), sample)) do
      if others >= freed_total then break end
      if not counts[other] then
        local o = call('HMGET', key('tn', other), 'inf', 'cap')
        if tonumber(o[1] or '0') < tonumber(o[2] or '1000000') then
          unpark_capped(other)
          others = others + 1
        end
      end
    end
    woken = woken + others
  end
  return woken
end

-- Ends a running job's lease (its token is no longer current) and gives back its slot;
-- returns whether a parked tenant was woken.
local function release(ref)
  call('ZREM', key('leases'), ref)
  call('HDEL', key('lt'), ref)
  local t = tenant_of(ref)
  return release_slots({[t] = 1}, {t}) > 0
end

-- Ends a lease that did not succeed: the attempt it ran is written to the job, the slot goes
-- back.
local function end_lease(ref, attempt)
  call('HSET', key('j', ref), 'a', attempt)
  return release(ref)
end

local function is_done(ref)
  return call('SISMEMBER', key('done', '0'), ref) == 1 or call('SISMEMBER', key('done', '1'), ref) == 1
end

-- 'stale' or 'notfound' for a reference without a current lease
local function not_leased(ref)
  if call('EXISTS', key('j', ref)) == 1 or is_done(ref) then return 'stale' end
  return 'notfound'
end

-- 'ok', 'stale' or 'notfound' for a lease (ref, token); with 'ok', the lease's attempt
local function check_lease(ref, token)
  local entry = call('HGET', key('lt'), ref)
  if not entry then return not_leased(ref) end
  local current, attempt = string.match(entry, '^(%d+) %d (%d+)')
  if current ~= token then return 'stale' end
  return 'ok', attempt
end

-- A job's state: the one at rest in its hash, or 'running' while it holds a lease.
local function job_state(ref, at_rest)
  if at_rest == 'queued' and call('HEXISTS', key('lt'), ref) == 1 then return 'running' end
  return at_rest
end

-- The job's record d; a hash written before d existed has its parts as separate fields.
local function record_of(jk)
  local v = call('HMGET', jk, 'd', 'm', 'k', 'p')
  if v[1] then return v[1] end
  return (v[2] or '1') .. '\n' .. (v[4] or 'null') .. '\n' .. (v[3] or '')
end

local function record_attempt(ref, err, now)
  local jk = key('j', ref)
  local v = call('HMGET', jk, 'h', 'a')
  local history = cjson.decode(v[1] or '[]')
  history[#history + 1] = {attempt = tonumber(v[2] or '0'), at_ms = now, error = string.sub(err, 1, 2000)}
  call('HSET', jk, 'h', cjson.encode(history))
end

local function backoff(attempt, jitter)
  local exponent = min(max(attempt - 1, 0), 20)
  local ceiling = min(1000 * 2 ^ exponent, 300000)
  return math.floor(ceiling * min(max(jitter, 0), 1))
end

local function retry_or_dead_letter(ref, retryable, now, jitter)
  local jk = key('j', ref)
  local t = tenant_of(ref)
  local attempt = tonumber(call('HGET', jk, 'a') or '0')
  local max_attempts = tonumber(string.match(record_of(jk), '^%d+') or '1')
  if retryable and attempt < max_attempts then
    local run_at = now + backoff(attempt, jitter)
    call('HSET', jk, 's', 'delayed', 'ra', int(run_at))
    call('ZADD', key('delayed'), int(run_at), ref)
    call('HINCRBY', key('tn', t), 'dl', 1)
    return {'retry', int(run_at), int(attempt)}
  end
  call('HSET', jk, 's', 'dead')
  call('RPUSH', key('dlq', t), ref)
  call('HINCRBY', key('tn', t), 'dead', 1)
  return {'dead', int(attempt)}
end

-- operations -------------------------------------------------------------------------------

if op == 'set_policy' then
  local t = ARGV[2]
  call('HSET', key('tn', t), 'w', ARGV[3], 'floor', ARGV[4], 'cap', ARGV[5], 'rate', ARGV[6], 'rb', ARGV[7], 'layout', LAYOUT)
  if call('SREM', key('capped'), t) == 1 then
    call('HDEL', key('tn', t), 'pk')
    unpark(t)
  end
  wake(1)
  return 'ok'
end

if op == 'enqueue' then
  -- ARGV: op, now, n, then n x (id, tenant, group, band, cost, idempotency key, run_at, record)
  local now, n = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out, ready = {}, {}
  local ctx = batch(n)
  -- A job id the shard knows (a live job hash, or a reference in a done set) returns the
  -- existing job. One EXISTS and one SMISMEMBER per done generation cover the whole batch:
  -- when none finds anything (the usual case) the per-job check is skipped, and ids repeated
  -- within the batch are caught by `created`.
  local refs, job_keys, done = {}, {}, {}
  for i = 0, n - 1 do
    local a = 4 + i * 8
    refs[i + 1] = ARGV[a + 1] .. '/' .. ARGV[a]
    job_keys[i + 1] = key('j', refs[i + 1])
  end
  local any_exists = false
  for i = 1, n, 800 do
    local last = min(i + 799, n)
    if call('EXISTS', unpack(job_keys, i, last)) > 0 then any_exists = true end
    for generation = 0, 1 do
      local known = call('SMISMEMBER', key('done', BS[generation]), unpack(refs, i, last))
      for k = 1, last - i + 1 do
        if known[k] == 1 then done[i + k - 1] = true end
      end
    end
  end
  local created = {}
  for i = 0, n - 1 do
    local a = 4 + i * 8
    local id, t, g, b, idem, run_at_s = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 5], ARGV[a + 6]
    local jk = job_keys[i + 1]
    local existing = false
    if idem ~= '' then existing = call('HGET', key('idem', t), idem) end
    if existing then
      out[2 * i + 1], out[2 * i + 2] = existing, '1'
    elseif created[jk] or done[i + 1] or (any_exists and call('EXISTS', jk) == 1) then
      out[2 * i + 1], out[2 * i + 2] = id, '1'
    else
      created[jk] = true
      if idem ~= '' then call('HSET', key('idem', t), idem, id) end
      local due = tonumber(run_at_s) <= now
      -- A small hash is a listpack searched from its start: the fields a dispatch reads come
      -- first. Fields with nothing to say yet are left out: attempts ('a', read as 0), the
      -- history ('h', read as []) and, for a job due now, its run time ('ra').
      if due then
        call('HSET', jk, 's', 'queued', 'c', ARGV[a + 4], 'd', ARGV[a + 7], 'b', b, 'g', g)
        ready[#ready + 1] = {refs[i + 1], t, tonumber(b), g}
      else
        call('HSET', jk, 's', 'delayed', 'c', ARGV[a + 4], 'd', ARGV[a + 7], 'b', b, 'g', g, 'ra', run_at_s)
        call('ZADD', key('delayed'), run_at_s, refs[i + 1])
        ctx.delayed[t] = (ctx.delayed[t] or 0) + 1
      end
      out[2 * i + 1], out[2 * i + 2] = id, '0'
    end
  end
  ready_many(ready, ctx)
  flush_delayed(ctx)
  if #ready > 0 then wake(#ready) end
  return out
end

if op == 'lease' then
  -- ARGV: op, now, limit, lease_ms, burst_pool. Returns the lease expiry, then per lease:
  -- reference, token, attempt, record.
  local now, limit, lease_ms, pool = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  call('SET', key('lastlease'), ARGV[2])
  promote_due(now)
  -- Per-call caches: everything read here is written back once at the end of the call.
  local band_size, vts, credits = {}, {}, {}
  local c = call('HMGET', key('credit'), '0', '1', '2')
  local v = call('HMGET', key('vt'), '0', '1', '2')
  for b = 0, 2 do
    call('ZADD', ACT[b], 'NX', '+inf', SENTINEL)
    band_size[b] = call('ZCARD', ACT[b]) - 1
    credits[b] = tonumber(c[b + 1] or '0')
    vts[b] = tonumber(v[b + 1] or '0')
  end
  local burst = tonumber(call('GET', key('burst')) or '0')
  local burst_start = burst
  -- each tenant touched: its state hash read once, changed here, written back once
  local tenants = {}
  local function state(t)
    local s = tenants[t]
    if s then return s end
    local f = call('HMGET', key('tn', t), 'w', 'floor', 'cap', 'rate', 'rb', 'inf', 'tat', 'l0', 'l1', 'l2', 'q0', 'q1', 'q2', 'sv', 'layout')
    s = {w = tonumber(f[1] or '1'), floor = tonumber(f[2] or '1'), cap = tonumber(f[3] or '1000000'),
         rate = tonumber(f[4] or '0'), rb = tonumber(f[5] or '1'), inf = tonumber(f[6] or '0'),
         tat = tonumber(f[7] or '-1'),
         l = {[0] = tonumber(f[8] or '0'), tonumber(f[9] or '0'), tonumber(f[10] or '0')},
         q = {[0] = tonumber(f[11] or '0'), tonumber(f[12] or '0'), tonumber(f[13] or '0')},
         sv = tonumber(f[14] or '0'), f = {}, dirty = false, layout = f[15]}
    tenants[t] = s
    return s
  end
  local lease_pairs, lease_table = {}, {}
  -- finish tags of groups that emptied while their tenant stayed in the band, per tenant:band,
  -- and the tenant:bands the tenant left (their group level starts afresh)
  local gfs, gf_drop = {}, {}
  -- the tenant has nothing left in band b: its group level starts afresh when it returns
  local function leave_band(t, s, b)
    local field = t .. ':' .. BS[b]
    gfs[field] = {}
    gf_drop[field] = true
    s.l[b], s.q[b] = 0, 0
  end
  local function park(t, s, reason)
    for b = 0, 2 do band_size[b] = band_size[b] - call('ZREM', ACT[b], t) end
    s.pk = reason
    s.dirty = true
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
      if band_size[b] > 0 then credits[b] = min(credits[b] + SHARE[b], 2) end
    end
    return first
  end
  local expiry = now + lease_ms
  local expiry_s = int(expiry)
  -- tokens for this call, reserved at once: larger than any this shard has handed out
  local token = call('INCRBY', key('tok'), int(limit)) - limit
  local out = {expiry}
  local budget = limit * 4 + 64
  local leased = 0
  while leased < limit and budget > 0 do
    budget = budget - 1
    local b = pick()
    if b == nil then break end
    local top = call('ZPOPMIN', ACT[b])
    if #top == 0 or top[1] == SENTINEL then
      if #top > 0 then call('ZADD', ACT[b], '+inf', SENTINEL) end
      band_size[b] = 0
    else
      band_size[b] = band_size[b] - 1
      local t, start = top[1], tonumber(top[2])
      local s = state(t)
      local ok, gv = true, nil
      if s.rate > 0 then
        local interval = 1000 / s.rate
        local tolerance = (max(s.rb, 1) - 1) * interval
        local tat = max(s.tat < 0 and now or s.tat, now)
        local new_tat = tat + interval
        local allow_at = new_tat - tolerance - interval
        if now < allow_at then ok, gv = false, math.ceil(allow_at) else gv = new_tat end
      end
      if not ok then
        park(t, s, 'rate')
        call('ZADD', key('thr'), int(gv), t)
      else
        local running = s.inf
        local slot = nil
        if running < s.floor then slot = 0 elseif running < s.cap and burst < pool then slot = 1 end
        if slot == nil then
          park(t, s, 'cap')
          call('SADD', key('capped'), t)
        else
          if gv then s.tat = gv end
          -- take the tenant's head job: group level first, then the group's oldest job
          local ga = key('ga', t, b)
          local gtop = call('ZPOPMIN', ga)
          local g, group_start = gtop[1], tonumber(gtop[2])
          if not g then
            -- only a queued count that has drifted from the groups (a hash from an older
            -- script) gets here: the tenant has nothing in the band, so it leaves it
            leave_band(t, s, b)
            s.f[b] = s.f[b] or start
            s.dirty = true
          else
            local gq = key('gq', t, b, g)
            local ref = call('ZPOPMIN', gq)[1]
            local jk = key('j', ref)
            local f = call('HMGET', jk, 'c', 'a', 'd')
            local cost = max(tonumber(f[1]), 0)
            local group_finish = group_start + cost
            local has_more, emptied = true, false
            s.q[b] = s.q[b] - 1
            if call('ZCARD', gq) > 0 then
              call('ZADD', ga, num(group_finish), g)
            else
              emptied = true
              -- the queued count answers while it is positive; at zero the groups confirm it
              has_more = s.q[b] > 0 or call('ZCARD', ga) > 0
            end
            if has_more then
              s.l[b] = max(s.l[b], group_start)
              s.q[b] = max(s.q[b], 0)
              if emptied then
                local field = t .. ':' .. BS[b]
                local groups = gfs[field]
                if not groups then
                  groups = {}
                  gfs[field] = groups
                end
                groups[g] = group_finish
              end
            else
              leave_band(t, s, b)
            end
            local finish_tag = start + cost / max(s.w, 1e-9)
            s.f[b] = finish_tag
            s.sv = s.sv + cost
            s.inf = running + 1
            s.dirty = true
            vts[b] = max(vts[b], start)
            if has_more then
              call('ZADD', ACT[b], num(finish_tag), t)
              band_size[b] = band_size[b] + 1
            end
            if slot == 1 then burst = burst + 1 end
            local attempt = tonumber(f[2] or '0') + 1
            token = token + 1
            local token_s = int(token)
            lease_pairs[2 * leased + 1], lease_pairs[2 * leased + 2] = expiry_s, ref
            lease_table[2 * leased + 1] = ref
            lease_table[2 * leased + 2] = token_s .. ' ' .. BS[b] .. ' ' .. int(attempt) .. ' ' .. f[1]
            -- integers go back as integer replies: no formatting on this side
            local o = 4 * leased + 1
            out[o + 1], out[o + 2], out[o + 3], out[o + 4] = ref, token, attempt, f[3] or record_of(jk)
            leased = leased + 1
          end
        end
      end
    end
  end
  -- write back what the caches changed. The leases index and the lease table keep a
  -- sentinel (SENTINEL at +inf, field '~' holding LAYOUT), so they stay in their hashed
  -- encodings when every lease has ended: rebuilt from empty, each would start as a listpack
  -- that every one of the call's inserts scans.
  if leased > 0 then
    lease_pairs[#lease_pairs + 1], lease_pairs[#lease_pairs + 2] = '+inf', SENTINEL
    lease_table[#lease_table + 1], lease_table[#lease_table + 2] = '~', LAYOUT
    many('ZADD', key('leases'), lease_pairs)
    many('HSET', key('lt'), lease_table)
  end
  for field, groups in pairs(gfs) do
    if gf_drop[field] then call('DEL', key('gf', field)) end
    local flat = {}
    for g, tag in pairs(groups) do
      flat[#flat + 1] = g
      flat[#flat + 1] = num(tag)
    end
    many('HSET', key('gf', field), flat)
  end
  for t, s in pairs(tenants) do
    if s.dirty then
      local flat = {'inf', int(s.inf), 'sv', num(s.sv)}
      if not s.layout then
        flat[#flat + 1] = 'layout'
        flat[#flat + 1] = LAYOUT
      end
      if s.tat >= 0 then
        flat[#flat + 1] = 'tat'
        flat[#flat + 1] = num(s.tat)
      end
      for b = 0, 2 do
        if s.f[b] then
          flat[#flat + 1] = BAND_L[b]
          flat[#flat + 1] = num(s.l[b])
          flat[#flat + 1] = BAND_F[b]
          flat[#flat + 1] = num(s.f[b])
          flat[#flat + 1] = BAND_Q[b]
          flat[#flat + 1] = int(s.q[b])
        end
      end
      if s.pk then
        flat[#flat + 1] = 'pk'
        flat[#flat + 1] = s.pk
      end
      call('HSET', key('tn', t), unpack(flat))
    end
  end
  call('HSET', key('vt'), '0', num(vts[0]), '1', num(vts[1]), '2', num(vts[2]))
  call('HSET', key('credit'), '0', num(credits[0]), '1', num(credits[1]), '2', num(credits[2]))
  if burst ~= burst_start then call('SET', key('burst'), int(burst)) end
  return out
end

if op == 'heartbeat' then
  -- ARGV: op, ref, token, new expiry (ms); the lease's expiry lives only in the leases index
  local ref, token = ARGV[2], ARGV[3]
  local status = check_lease(ref, token)
  if status ~= 'ok' then return status end
  call('ZADD', key('leases'), ARGV[4], ref)
  return 'ok'
end

-- Adds succeeded references to the current done set. A generation that has grown old is
-- retired before the references go in, a full one after, so a reference always stays known
-- for the whole life of the generation after its own (see DONE_GENERATION).
local function record_done(refs, now)
  local meta = call('HMGET', key('donemeta'), 'cur', 'since')
  local cur, since = meta[1] or '0', tonumber(meta[2] or '')
  local function rotate()
    local older = cur == '0' and '1' or '0'
    call('UNLINK', key('done', older))
    call('HSET', key('donemeta'), 'cur', older, 'since', int(now))
    cur, since = older, now
  end
  if not since then
    since = now
    call('HSET', key('donemeta'), 'cur', cur, 'since', int(now))
  elseif now - since >= DONE_AGE_MS then
    rotate()
  end
  many('SADD', key('done', cur), refs)
  if call('SCARD', key('done', cur)) >= DONE_GENERATION then rotate() end
end

-- Charges measured costs: `corrections` maps tenant -> band -> (measured - estimated) summed
-- over the tenant's completions, each clamped to MAX_CORRECTION. The finish tag moves by the
-- correction over the weight, and a tenant waiting in the band moves with it (never below V).
local function charge(corrections)
  for t, bands in pairs(corrections) do
    local tk = key('tn', t)
    local s = call('HMGET', tk, 'w', 'f0', 'f1', 'f2', 'sv')
    local weight = max(tonumber(s[1] or '1'), 1e-9)
    local flat, total = {}, 0
    for b, correction in pairs(bands) do
      local delta = correction / weight
      total = total + correction
      flat[#flat + 1] = BAND_F[b]
      flat[#flat + 1] = num(tonumber(s[b + 2] or '0') + delta)
      local tag = call('ZSCORE', ACT[b], t)
      if tag then call('ZADD', ACT[b], num(max(tonumber(tag) + delta, vt(b))), t) end
    end
    flat[#flat + 1] = 'sv'
    flat[#flat + 1] = num(tonumber(s[5] or '0') + total)
    call('HSET', tk, unpack(flat))
  end
end

if op == 'complete_many' then
  -- ARGV: op, now, n, then n x (ref, token, measured); returns one status per lease. The lease
  -- table answers every fencing check in one read; the succeeded jobs' hashes and lease
  -- entries go in one call each, and slots and cost corrections are settled per tenant.
  local now, n, out = tonumber(ARGV[2]), tonumber(ARGV[3]), {}
  local listed = {}
  for i = 1, n do listed[i] = ARGV[1 + i * 3] end
  local entries = {}
  for i = 1, n, 800 do
    local part = call('HMGET', key('lt'), unpack(listed, i, min(i + 799, n)))
    for k = 1, #part do entries[i + k - 1] = part[k] end
  end
  local refs, job_keys, per_tenant, order, corrections, taken = {}, {}, {}, {}, {}, {}
  for i = 1, n do
    local a = 1 + i * 3
    local ref, entry = ARGV[a], entries[i]
    if not entry then
      out[i] = not_leased(ref)
    else
      local token, b, estimate = string.match(entry, '^(%d+) (%d) %d+ (.*)$')
      if token ~= ARGV[a + 1] or taken[ref] then
        out[i] = 'stale'
      else
        out[i] = 'ok'
        taken[ref] = true
        refs[#refs + 1] = ref
        job_keys[#job_keys + 1] = key('j', ref)
        local t = tenant_of(ref)
        if not per_tenant[t] then
          per_tenant[t] = 0
          order[#order + 1] = t
        end
        per_tenant[t] = per_tenant[t] + 1
        local measured = max(tonumber(ARGV[a + 2]) or 0, 0)
        local correction = max(-MAX_CORRECTION, min(MAX_CORRECTION, measured - max(tonumber(estimate), 0)))
        if correction ~= 0 then
          b = tonumber(b)
          local bands = corrections[t]
          if not bands then
            bands = {}
            corrections[t] = bands
          end
          bands[b] = (bands[b] or 0) + correction
        end
      end
    end
  end
  if #refs > 0 then
    many('HDEL', key('lt'), refs)
    many('ZREM', key('leases'), refs)
    for i = 1, #job_keys, 800 do call('UNLINK', unpack(job_keys, i, min(i + 799, #job_keys))) end
    record_done(refs, now)
  end
  charge(corrections)
  local woken = release_slots(per_tenant, order)
  if woken > 0 then wake(woken) end
  return out
end

if op == 'fail' then
  local ref, token, err, retryable, now, jitter = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
  local status, attempt = check_lease(ref, token)
  if status ~= 'ok' then return {status} end
  end_lease(ref, attempt)
  record_attempt(ref, err, now)
  wake(1)
  return retry_or_dead_letter(ref, retryable, now, jitter)
end

if op == 'reap' then
  -- ARGV: op, now, jitter seed; returns flat (id, tenant, outcome...) x n, padded to 5 fields
  local now, seed = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out = {}
  local expired = call('ZRANGEBYSCORE', key('leases'), '-inf', now, 'LIMIT', 0, 1000)
  for _, ref in ipairs(expired) do
    local entry = call('HGET', key('lt'), ref) or ''
    local attempt = string.match(entry, '^%d+ %d (%d+)') or call('HGET', key('j', ref), 'a') or '0'
    end_lease(ref, attempt)
    record_attempt(ref, 'lease expired on attempt ' .. attempt .. ': worker lost', now)
    seed = (seed * 1103515245 + 12345) % 2147483648
    local outcome = retry_or_dead_letter(ref, true, now, seed / 2147483648)
    out[#out + 1] = id_of(ref); out[#out + 1] = tenant_of(ref)
    out[#out + 1] = outcome[1]; out[#out + 1] = outcome[2]; out[#out + 1] = outcome[3] or ''
  end
  if #expired > 0 then wake(#expired) end
  return out
end

if op == 'cancel' then
  local ref = ARGV[2]
  local jk = key('j', ref)
  local t = tenant_of(ref)
  local v = call('HMGET', jk, 's', 'b', 'g')
  local s, b, g = v[1], tonumber(v[2]), v[3]
  if not s then return is_done(ref) and 'succeeded' or '' end
  local lease = call('HGET', key('lt'), ref)
  if lease then s = 'running' end
  if s == 'queued' then
    local gq, ga = key('gq', t, b, g), key('ga', t, b)
    call('ZREM', gq, ref)
    if call('ZCARD', gq) == 0 then call('ZREM', ga, g) end
    if call('ZCARD', ga) == 0 then
      -- the tenant leaves the band, as when its last job is leased
      call('ZREM', ACT[b], t)
      call('DEL', key('gf', t, b))
      call('HSET', key('tn', t), BAND_Q[b], '0', BAND_L[b], '0')
    else
      call('HINCRBY', key('tn', t), BAND_Q[b], -1)
    end
  elseif s == 'delayed' then
    call('ZREM', key('delayed'), ref)
    call('HINCRBY', key('tn', t), 'dl', -1)
  elseif s == 'running' then
    -- a hash from before the lease table has no entry there: its attempt is already written
    local attempt = lease and string.match(lease, '^%d+ %d (%d+)')
    if attempt then end_lease(ref, attempt) else release(ref) end
    wake(1)
  else
    return s
  end
  call('HSET', jk, 's', 'cancelled')
  call('PEXPIRE', jk, TERMINAL_TTL_MS)
  return s
end

if op == 'state' then
  local s = call('HGET', key('j', ARGV[2]), 's')
  if s then return job_state(ARGV[2], s) end
  return is_done(ARGV[2]) and 'succeeded' or ''
end

if op == 'dead_letters' then
  -- returns flat (id, record, history) per dead letter
  local out = {}
  for _, ref in ipairs(call('LRANGE', key('dlq', ARGV[2]), 0, 9999)) do
    local jk = key('j', ref)
    out[#out + 1] = id_of(ref); out[#out + 1] = record_of(jk); out[#out + 1] = call('HGET', jk, 'h') or '[]'
  end
  return out
end

if op == 'redrive' then
  local ref = ARGV[2]
  local jk = key('j', ref)
  if call('HGET', jk, 's') ~= 'dead' then return 0 end
  local t = tenant_of(ref)
  call('LREM', key('dlq', t), 0, ref)
  call('HINCRBY', key('tn', t), 'dead', -1)
  call('HSET', jk, 'a', '0')
  requeue({ref}, batch(1), false)
  wake(1)
  return 1
end

if op == 'explain' then
  -- returns: state, run_at, position, tenant tag, V, blocker kind, n1, n2, n3
  local ref, now = ARGV[2], tonumber(ARGV[3])
  local jk = key('j', ref)
  local t = tenant_of(ref)
  local v = call('HMGET', jk, 's', 'b', 'g', 'ra')
  local s, b, g = v[1], tonumber(v[2]), v[3]
  if not s then
    if is_done(ref) then return {'succeeded', '', '', '', '0', '', '', '', ''} end
    return {}
  end
  s = job_state(ref, s)
  local tag = call('ZSCORE', ACT[b], t) or ''
  local out = {s, v[4] or '', '', tag, num(vt(b)), '', '', '', ''}
  if s ~= 'queued' then return out end
  local seq = tonumber(call('ZSCORE', key('gq', t, b, g), ref))
  local ahead = 0
  for _, group in ipairs(call('ZRANGE', key('ga', t, b), 0, 999)) do
    ahead = ahead + call('ZCOUNT', key('gq', t, b, group), '-inf', '(' .. seq)
  end
  out[3] = tostring(ahead)
  local last = call('GET', key('lastlease'))
  local throttled = call('ZSCORE', key('thr'), t)
  if call('SISMEMBER', key('capped'), t) == 1 then
    out[6] = 'cap'
    local p = call('HMGET', key('tn', t), 'inf', 'cap', 'floor')
    out[7] = p[1] or '0'; out[8] = p[2] or '1000000'; out[9] = p[3] or '1'
  elseif throttled then
    out[6] = 'rate_limit'; out[7] = throttled
  elseif (not last) or now - tonumber(last) > 5000 then
    out[6] = 'no_worker'
  else
    local higher = false
    for hb = 0, b - 1 do
      if call('ZCOUNT', ACT[hb], '-inf', '(+inf') > 0 then higher = true end
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
    for _, g in ipairs(call('ZRANGE', key('ga', t, b), 0, -1)) do
      local gq = key('gq', t, b, g)
      for _, ref in ipairs(call('ZRANGE', gq, 0, budget - 1)) do
        call('ZREM', gq, ref)
        call('DEL', key('j', ref))
        cancelled = cancelled + 1
        budget = budget - 1
      end
      if call('ZCARD', gq) == 0 then call('ZREM', key('ga', t, b), g) end
      if budget <= 0 then return {0, cancelled} end
    end
  end
  -- delayed and running jobs are found through the shared indexes by their tenant prefix
  for _, index in ipairs({'delayed', 'leases'}) do
    local cursor = '0'
    repeat
      local page = call('ZSCAN', key(index), cursor, 'MATCH', t .. '/*', 'COUNT', 1000)
      cursor = page[1]
      for i = 1, #page[2], 2 do
        local ref = page[2][i]
        if index == 'leases' then release(ref) end
        call('ZREM', key(index), ref)
        call('DEL', key('j', ref))
        cancelled = cancelled + 1
        budget = budget - 1
      end
    until cursor == '0' or budget <= 0
    if budget <= 0 then return {0, cancelled} end
  end
  -- the tenant's succeeded jobs are forgotten too, in the same bounded steps
  for generation = 0, 1 do
    local done = key('done', BS[generation])
    local cursor = '0'
    repeat
      local page = call('SSCAN', done, cursor, 'MATCH', t .. '/*', 'COUNT', 1000)
      cursor = page[1]
      if #page[2] > 0 then
        many('SREM', done, page[2])
        budget = budget - #page[2]
      end
    until cursor == '0' or budget <= 0
    if budget <= 0 then return {0, cancelled} end
  end
  for _, ref in ipairs(call('LRANGE', key('dlq', t), 0, -1)) do call('DEL', key('j', ref)) end
  call('DEL', key('dlq', t), key('idem', t), key('tn', t))
  for b = 0, 2 do
    call('ZREM', ACT[b], t)
    call('DEL', key('ga', t, b), key('gf', t, b))
  end
  call('SREM', key('capped'), t)
  call('ZREM', key('thr'), t)
  return {1, cancelled}
end

if op == 'stats' then
  local t = ARGV[2]
  local c = call('HMGET', key('tn', t), 'q0', 'q1', 'q2', 'inf', 'dl', 'dead', 'pk', 'sv')
  local queued = tonumber(c[1] or '0') + tonumber(c[2] or '0') + tonumber(c[3] or '0')
  local parked = ({cap = 'capped', rate = 'throttled'})[c[7] or ''] or ''
  return {int(queued), c[4] or '0', c[5] or '0', c[6] or '0', parked, c[8] or '0'}
end

return redis.error_reply('unknown queue operation ' .. tostring(op))
