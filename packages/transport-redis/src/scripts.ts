import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * A Lua script run with EVALSHA, falling back to EVAL (which caches it) when the server does not
 * know it yet, e.g. after a restart.
 */
export interface Script {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

function script(name: string, source: string): Script {
  return { name, source, sha: createHash("sha1").update(source).digest("hex") };
}

interface Corkable {
  cork(): void;
  uncork(): void;
}
const corked = new WeakSet<Corkable>();

/**
 * Holds the connection's socket writes until the end of this tick, so that the commands issued
 * in one tick leave in one write (ioredis writes each command on its own, and its
 * auto-pipelining costs more than it saves here).
 */
export function coalesceWrites(redis: Redis): void {
  const stream = (redis as unknown as { stream?: Partial<Corkable> }).stream;
  if (redis.status !== "ready" || stream === undefined) return;
  if (typeof stream.cork !== "function" || typeof stream.uncork !== "function") return;
  const s = stream as Corkable;
  if (corked.has(s)) return;
  corked.add(s);
  s.cork();
  process.nextTick(() => {
    corked.delete(s);
    s.uncork();
  });
}

/**
 * Runs `write` (which issues commands on `redis`) and sends what it wrote now, in one socket
 * write, rather than at the end of the tick; inside a tick whose writes are held already (see
 * {@link coalesceWrites}) the commands simply join them.
 */
export function writeNow(redis: Redis, write: () => void): void {
  const stream = (redis as unknown as { stream?: Partial<Corkable> }).stream;
  if (
    redis.status !== "ready" ||
    stream === undefined ||
    typeof stream.cork !== "function" ||
    typeof stream.uncork !== "function" ||
    corked.has(stream as Corkable)
  ) {
    write();
    return;
  }
  const s = stream as Corkable;
  corked.add(s);
  s.cork();
  try {
    write();
  } finally {
    corked.delete(s);
    s.uncork();
  }
}

/** Runs `s` with `keys` and `args`. */
export async function runScript(
  redis: Redis,
  s: Script,
  keys: readonly string[],
  args: readonly (string | Buffer | number)[],
): Promise<unknown> {
  coalesceWrites(redis);
  try {
    return await redis.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!isNoScript(err)) throw err;
    return await redis.eval(s.source, keys.length, ...keys, ...args);
  }
}

/**
 * Runs `s` without keys, with `args` as they are, without holding the socket write to the end of
 * the tick (the caller decides: see {@link writeNow}).
 */
export async function runScriptNow(
  redis: Redis,
  s: Script,
  args: (string | Buffer)[],
): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, 0, args);
  } catch (err) {
    if (!isNoScript(err)) throw err;
    return await redis.eval(s.source, 0, args);
  }
}

/**
 * Runs `s` without keys, with an argument list built by the caller (not copied: ioredis takes
 * the array as it is, where a spread of a long list would copy it twice).
 */
export async function runScriptArgs(
  redis: Redis,
  s: Script,
  args: (string | Buffer)[],
): Promise<unknown> {
  coalesceWrites(redis);
  try {
    return await redis.evalsha(s.sha, 0, args);
  } catch (err) {
    if (!isNoScript(err)) throw err;
    return await redis.eval(s.source, 0, args);
  }
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith("NOSCRIPT");
}

/** Splits a dotted topic or pattern into words, and AMQP topic matching (`*` one word, `#` zero or more), as `topicMatches` does. */
const TOPIC_LUA = `
local function words(s)
  if s == '' then return {} end
  local out = {}
  local start = 1
  while true do
    local dot = string.find(s, '.', start, true)
    if dot == nil then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, dot - 1)
    start = dot + 1
  end
end

-- Walks the pattern once, keeping the topic positions reachable so far: O(pattern x topic)
-- whatever the number of '#' (backtracking would be exponential in it, and block the server).
local function matches(p, t)
  local n = #t
  local reach = {}
  for j = 1, n + 1 do reach[j] = false end
  reach[1] = true
  for i = 1, #p do
    local w = p[i]
    local nxt = {}
    for j = 1, n + 1 do nxt[j] = false end
    local any = false
    for j = 1, n + 1 do
      if w == '#' then
        if reach[j] then any = true end
        if any then nxt[j] = true end
      elseif reach[j] and j <= n and (w == '*' or w == t[j]) then
        nxt[j + 1] = true
        any = true
      end
    end
    if not any then return false end
    reach = nxt
  end
  return reach[n + 1]
end
`;

/**
 * The mesh's event log (`{mesh}:evlog`, retention in `{mesh}:evlog:cfg`): appending an entry
 * and dropping the oldest beyond the retention. Sizes are the bytes of the entry's field names
 * and values; the hash keeps their sum (`used`), so trimming reads only the entries it drops.
 */
const EVENT_LOG_LUA = `
local function entryBytes(f, first, last)
  local n = 0
  for k = first, last do n = n + string.len(f[k]) end
  return n
end

local function nextId(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. tostring(tonumber(seq) + 1)
end

-- Drops the oldest entries older than the age limit or beyond the size limit, never keepId, and
-- at most 1000 per call (a call blocks the server: after a long idle spell or a lowered limit,
-- the appends that follow catch up a thousand at a time). True when it stopped at that bound.
local function trimLog(log, cfg, keepId)
  local c = redis.call('HMGET', cfg, 'age', 'bytes', 'used')
  local maxAge = tonumber(c[1])
  local maxBytes = tonumber(c[2])
  local used = tonumber(c[3]) or 0
  if maxAge == nil or maxBytes == nil then return false end
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - maxAge
  local cursor = '-'
  local dropped = nil
  local ndropped = 0
  local done = false
  local bounded = false
  -- The usual case, within both limits, costs a look at the oldest entry alone.
  local count = 1
  if used > maxBytes then count = 64 end
  while not done do
    local batch = redis.call('XRANGE', log, cursor, '+', 'COUNT', count)
    count = 64
    if #batch == 0 then break end
    for _, e in ipairs(batch) do
      local id = e[1]
      local ms = tonumber(string.match(id, '^(%d+)'))
      if id == keepId or (used <= maxBytes and ms >= cutoff) then
        done = true
        break
      end
      if ndropped == 1000 then
        done = true
        bounded = true
        break
      end
      used = used - entryBytes(e[2], 1, #e[2])
      dropped = id
      ndropped = ndropped + 1
    end
    cursor = '(' .. batch[#batch][1]
  end
  if dropped ~= nil then
    redis.call('XTRIM', log, 'MINID', nextId(dropped))
    if used < 0 then used = 0 end
    redis.call('HSET', cfg, 'used', used)
  end
  return bounded
end

-- Appends topic + the entry a[first..last] to the log; its id, or nil when there is no log.
local function appendLog(prefix, topic, a, first, last)
  local cfg = prefix .. 'evlog:cfg'
  local log = prefix .. 'evlog'
  local id = redis.call('XADD', log, '*', 'topic', topic, unpack(a, first, last))
  local bytes = 5 + string.len(topic) + entryBytes(a, first, last)
  -- The first entry of the stream (it was empty, or deleted or evicted while the config
  -- stayed): 'used' counts this entry alone, whatever it said before.
  if redis.call('XLEN', log) == 1 then
    redis.call('HSET', cfg, 'used', bytes)
  else
    redis.call('HINCRBY', cfg, 'used', bytes)
  end
  trimLog(log, cfg, id)
  return id
end
`;

/**
 * Every frame sent in one tick, in the order of the `send` calls: requests and commands (added
 * to the stream of every service bound to the rpc name, or reported as not delivered), events
 * (added to the stream of every service with a binding that matches the topic, once per service;
 * and first to the mesh's event log when it is set up), log appends (an event that must be
 * stored: fails when there is no log) and responses (pushed to the address's list only while someone holds its lease, else dropped,
 * as AMQP drops a message for a queue that does not exist; the list then expires after its ttl).
 *
 * ARGV[1] = `{mesh}:`, ARGV[2] = response list ttl in ms, ARGV[3] = the frames as one
 * MessagePack array (one argument rather than a dozen per frame: cheaper to encode and parse),
 * per frame: kind (`r` rpc, `e` event, `l` log append, `p` response), target (rpc name, topic or address), the
 * number n of values that follow, then n values (the entry's fields, or the response blob).
 * Returns one result per frame, in order: how many services got it (responses: 1 pushed, 0
 * dropped; log appends: `[count, entry id]`), or the error that stopped it, as a string. Each frame fails alone (pcall): the others
 * of the batch still go; what a failed frame wrote before its error stays, as it did when every
 * frame had its own script.
 * Within one call nothing else runs on the server, so the rpc sets, event bindings and leases
 * read for one frame are reused for the next.
 */
export const SEND_BATCH = script(
  "send-batch",
  `${TOPIC_LUA}
${EVENT_LOG_LUA}
local prefix = ARGV[1]
local ttl = ARGV[2]
local logged = nil
local a = cmsgpack.unpack(ARGV[3])
local out = {}
local routes = {}
local subscribers = nil
local patterns = {}
local leases = {}
local expiring = {}
local function failed(r) return type(r) == 'table' and r.err ~= nil end
-- Adds the entry a[first..last] to the stream of each service in list that wants it (wants(s)
-- is true; false skips it; a string is an error: it stops there), or of every one when wants is
-- nil; how many got it, or the error that stopped it (what was added before stays).
local function addAll(list, first, last, wants)
  local count = 0
  for _, s in ipairs(list) do
    local w = true
    if wants ~= nil then w = wants(s) end
    if type(w) == 'string' then return w end
    if w then
      local r = redis.pcall('XADD', prefix .. 'sq:' .. s, '*', unpack(a, first, last))
      if failed(r) then return r.err end
      count = count + 1
    end
  end
  return count
end
local i = 1
local n = #a
while i <= n do
  local kind = a[i]
  local target = a[i + 1]
  local first = i + 3
  local last = i + 2 + a[i + 2]
  local result = 0
  if kind == 'r' then
    local bound = routes[target]
    if bound == nil then
      bound = redis.pcall('SMEMBERS', prefix .. 'rpc:' .. target)
      routes[target] = bound
    end
    if failed(bound) then
      result = bound.err
    else
      result = addAll(bound, first, last, nil)
    end
  elseif kind == 'e' or kind == 'l' then
    -- Stored first (when there is a log), then delivered: an event that could not be stored
    -- (or a log append without a log) goes nowhere and reports the error.
    if logged == nil then logged = redis.call('EXISTS', prefix .. 'evlog:cfg') == 1 end
    local id = nil
    if logged then
      local ok, r = pcall(appendLog, prefix, target, a, first, last)
      if ok then
        id = r
      else
        result = (type(r) == 'table' and r.err) or tostring(r)
      end
    elseif kind == 'l' then
      result = 'the event log is not set up for this mesh: run nuropb mesh setup with the event-log options, or transport.eventLog.setup()'
    end
    if subscribers == nil and type(result) ~= 'string' then
      subscribers = redis.pcall('SMEMBERS', prefix .. 'evs')
    end
    if type(result) == 'string' then
      -- not stored, so not delivered either
    elseif failed(subscribers) then
      result = subscribers.err
    else
      local topic = words(target)
      -- Whether one of s's bindings matches the topic (its bindings read once per call).
      result = addAll(subscribers, first, last, function(s)
        local ps = patterns[s]
        if ps == nil then
          ps = redis.pcall('SMEMBERS', prefix .. 'evb:' .. s)
          if not failed(ps) then
            for k, p in ipairs(ps) do ps[k] = words(p) end
            -- A service in evs has bindings; none left: a transient queue whose keys expired
            -- (its consumer crashed). It leaves evs now.
            if #ps == 0 then redis.pcall('SREM', prefix .. 'evs', s) end
          end
          patterns[s] = ps
        end
        if failed(ps) then return ps.err end
        for _, p in ipairs(ps) do
          if matches(p, topic) then return true end
        end
        return false
      end)
      if kind == 'l' and type(result) == 'number' then result = { result, id } end
    end
  else
    local held = leases[target]
    if held == nil then
      held = redis.call('EXISTS', prefix .. 'rql:' .. target) == 1
      leases[target] = held
    end
    if held then
      local list = prefix .. 'rq:' .. target
      local r = redis.pcall('RPUSH', list, a[first])
      if failed(r) then
        result = r.err
      else
        result = 1
        -- Once per list and call: the server's clock stands still while a script runs, so the
        -- list expires when it would have after a PEXPIRE per response.
        if not expiring[list] then
          expiring[list] = true
          r = redis.pcall('PEXPIRE', list, ttl)
          if failed(r) then result = r.err end
        end
      end
    end
  end
  out[#out + 1] = result
  i = last + 1
end
return out
`,
);

/**
 * A lone request or command (the usual frame of a tick at low load), as {@link SEND_BATCH} sends
 * one, without the batch's decoding and tables: a call costs about what a plain XADD does.
 * ARGV[1] = `{mesh}:`, ARGV[2] = rpc name, ARGV[3…] = the entry's fields. Returns how many
 * services got it (0: none is bound to the name).
 */
export const SEND_RPC = script(
  "send-rpc",
  `
local prefix = ARGV[1]
local bound = redis.call('SMEMBERS', prefix .. 'rpc:' .. ARGV[2])
for _, s in ipairs(bound) do
  redis.call('XADD', prefix .. 'sq:' .. s, '*', unpack(ARGV, 3))
end
return #bound
`,
);

/**
 * A lone response, as {@link SEND_BATCH} sends one: pushed to the address's list only while
 * someone holds its lease, else dropped; the list then expires after its ttl. First, when given,
 * the acknowledgements collected before it (XACK + XDEL, as the ack batcher sends them: one
 * command instead of three). ARGV[1] = `{mesh}:`, ARGV[2] = address, ARGV[3] = ttl in ms,
 * ARGV[4] = the response blob, then optionally ARGV[5] = stream, ARGV[6] = group, ARGV[7…] = the
 * entry ids to acknowledge. Returns 1 pushed, 0 dropped; `{ 1 or 0, error }` when the
 * acknowledgement failed (the entries are then claimed again; the response goes anyway).
 */
export const SEND_REPLY = script(
  "send-reply",
  `
local prefix = ARGV[1]
local ackErr = nil
if #ARGV >= 7 then
  local r = redis.pcall('XACK', ARGV[5], ARGV[6], unpack(ARGV, 7))
  if type(r) == 'table' and r.err then
    ackErr = r.err
  else
    r = redis.pcall('XDEL', ARGV[5], unpack(ARGV, 7))
    if type(r) == 'table' and r.err then ackErr = r.err end
  end
end
local pushed = 0
if redis.call('EXISTS', prefix .. 'rql:' .. ARGV[2]) == 1 then
  local list = prefix .. 'rq:' .. ARGV[2]
  redis.call('RPUSH', list, ARGV[4])
  redis.call('PEXPIRE', list, ARGV[3])
  pushed = 1
end
if ackErr ~= nil then return { pushed, ackErr } end
return pushed
`,
);

/**
 * Declares a service: its stream and group (from the start: what waited while no instance ran is
 * delivered), its rpc names, its event bindings. KEYS[1] = the stream; ARGV[1] = group,
 * ARGV[2] = `{mesh}:`, ARGV[3] = service, ARGV[4] = number of rpc names, then the rpc names, then
 * the event patterns.
 */
export const REGISTER_SERVICE = script(
  "register-service",
  `
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(r.err)
end
local nrpc = tonumber(ARGV[4])
for i = 5, 4 + nrpc do
  redis.call('SADD', ARGV[2] .. 'rpc:' .. ARGV[i], ARGV[3])
end
if #ARGV > 4 + nrpc then
  for i = 5 + nrpc, #ARGV do
    redis.call('SADD', ARGV[2] .. 'evb:' .. ARGV[3], ARGV[i])
  end
  redis.call('SADD', ARGV[2] .. 'evs', ARGV[3])
end
return 1
`,
);

/**
 * Reading an entry and letting go of it, shared by requeue and dead-letter. The copy is written
 * before the original is acknowledged and deleted: Redis keeps a script's writes made before an
 * error, so the other order would lose the entry when the copy cannot be written.
 */
const TAKE_LUA = `
local function owned(stream, group, id, consumer)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return #p > 0 and p[1][2] == consumer
end

local function entry(stream, id)
  local e = redis.call('XRANGE', stream, id, id)
  if #e == 0 then return nil end
  return e[1][2]
end

local function forget(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end
`;

/**
 * Requeue: put the entry back at the end of its stream, marked redelivered and keeping when the
 * original was stored (for its ttl); only if this consumer still holds it. KEYS[1] = stream;
 * ARGV[1] = group, ARGV[2] = id, ARGV[3] = consumer, ARGV[4] = `0` to give it back as it was
 * (read by a consumer that was stopping, never handed to a handler: not marked redelivered,
 * its own mark kept). Returns 1 when requeued.
 */
export const REQUEUE = script(
  "requeue",
  `${TAKE_LUA}
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local f = entry(KEYS[1], ARGV[2])
if f == nil then
  forget(KEYS[1], ARGV[1], ARGV[2])
  return 0
end
local mark = ARGV[4] ~= '0'
local out = {}
local ts = nil
for i = 1, #f, 2 do
  if f[i] == 'ts' then ts = f[i + 1]
  elseif f[i] ~= 'rd' or not mark then
    out[#out + 1] = f[i]
    out[#out + 1] = f[i + 1]
  end
end
if ts == nil then ts = string.match(ARGV[2], '^(%d+)') end
out[#out + 1] = 'ts'
out[#out + 1] = ts
if mark then
  out[#out + 1] = 'rd'
  out[#out + 1] = '1'
end
redis.call('XADD', KEYS[1], '*', unpack(out))
forget(KEYS[1], ARGV[1], ARGV[2])
return 1
`,
);

/**
 * Dead-letter: move the entry to the mesh's dead-letter stream with the reason, service and
 * original id; only if this consumer still holds it. KEYS[1] = stream, KEYS[2] = dead-letter
 * stream; ARGV[1] = group, ARGV[2] = id, ARGV[3] = consumer, ARGV[4] = reason, ARGV[5] = service,
 * ARGV[6] = approximate max length of the dead-letter stream, ARGV[7] = optional JSON object of
 * headers merged into the copy's `h` (`Delivery.deadLetter`: the failure record). Returns 1 when
 * dead-lettered.
 */
export const DEAD_LETTER = script(
  "dead-letter",
  `${TAKE_LUA}
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local f = entry(KEYS[1], ARGV[2])
if f == nil then
  forget(KEYS[1], ARGV[1], ARGV[2])
  return 0
end
-- An entry too wide for unpack (a foreign writer's) keeps its fields as one JSON array.
if #f > 7000 then f = { 'fields', cjson.encode(f) } end
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  local hi = nil
  for i = 1, #f - 1, 2 do
    if f[i] == 'h' then hi = i + 1 end
  end
  local ok, h = false, nil
  if hi ~= nil then ok, h = pcall(cjson.decode, f[hi]) end
  if ok and type(h) == 'table' then
    for k, v in pairs(cjson.decode(ARGV[7])) do h[k] = v end
    f[hi] = cjson.encode(h)
  elseif hi == nil then
    f[#f + 1] = 'h'
    f[#f + 1] = ARGV[7]
  else
    f[#f + 1] = 'failure'
    f[#f + 1] = ARGV[7]
  end
end
f[#f + 1] = 'reason'
f[#f + 1] = ARGV[4]
f[#f + 1] = 'service'
f[#f + 1] = ARGV[5]
f[#f + 1] = 'id'
f[#f + 1] = ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(f))
forget(KEYS[1], ARGV[1], ARGV[2])
return 1
`,
);

/**
 * Lease of a response address: take it when free, renew it when ours. KEYS[1] = lease;
 * ARGV[1] = token, ARGV[2] = ttl in ms. Returns 1 when we hold it, 0 when someone else does.
 */
export const HOLD_LEASE = script(
  "hold-lease",
  `
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`,
);

/** Releases a lease if it is ours. KEYS[1] = lease; ARGV[1] = token. */
export const RELEASE_LEASE = script(
  "release-lease",
  `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`,
);

/**
 * Forgets consumers of a group that hold nothing: this listener's own when it stops
 * (ARGV[3] = its name, ARGV[2] = ''), or every one idle longer than ARGV[2] ms (consumers of
 * instances that died, once their entries were claimed; ARGV[3] = ''). KEYS[1] = stream;
 * ARGV[1] = group. Returns how many.
 */
export const FORGET_CONSUMERS = script(
  "forget-consumers",
  `
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if pending == 0 and (name == ARGV[3] or (ARGV[2] ~= '' and idle > tonumber(ARGV[2]))) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    n = n + 1
  end
end
return n
`,
);

/**
 * Creates the event log of a mesh, or sets its retention, and trims to it, dropping at most 1000
 * entries: returns 1 when done, 2 when more are to be dropped (call it again). KEYS[1] = the
 * log, KEYS[2] = its config hash; ARGV[1] = max age in ms, ARGV[2] = max bytes.
 */
export const SETUP_EVENT_LOG = script(
  "setup-event-log",
  `${EVENT_LOG_LUA}
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[2], 'used', 0) end
redis.call('HSET', KEYS[2], 'age', ARGV[1], 'bytes', ARGV[2])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local keep = ''
if #last > 0 then keep = last[1][1] end
if trimLog(KEYS[1], KEYS[2], keep) then return 2 end
return 1
`,
);

/**
 * One page of the event log: entries from ARGV[1] (an XRANGE start: '-', '(id' or 'id') whose
 * topic matches one of the patterns, stored before ARGV[2] ms ('' for no bound), at most ARGV[3],
 * scanning at most ARGV[4] entries (a call blocks the server). KEYS[1] = the log; ARGV[5…] = the
 * patterns (none: every entry). Returns '{ entries, state, cursor }': state 0 no more entries,
 * 1 more match, 2 the scan budget ran out (continue from cursor).
 */
export const READ_EVENT_LOG = script(
  "read-event-log",
  `${TOPIC_LUA}
local cursor = ARGV[1]
local untilMs = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local pats = {}
for i = 5, #ARGV do pats[#pats + 1] = words(ARGV[i]) end
local function wanted(topic)
  if #pats == 0 then return true end
  local t = words(topic)
  for _, p in ipairs(pats) do
    if matches(p, t) then return true end
  end
  return false
end
local out = {}
local scanned = 0
while scanned < budget do
  local batch = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 256)
  if #batch == 0 then return { out, 0, '' } end
  for _, e in ipairs(batch) do
    local id = e[1]
    if untilMs ~= nil and tonumber(string.match(id, '^(%d+)')) >= untilMs then
      return { out, 0, '' }
    end
    scanned = scanned + 1
    local f = e[2]
    if f[1] == 'topic' and wanted(f[2]) then
      if #out == limit then return { out, 1, '' } end
      out[#out + 1] = e
    end
    cursor = '(' .. id
  end
end
return { out, 2, cursor }
`,
);
