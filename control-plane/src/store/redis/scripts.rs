//! Lua scripts for the operations that must be atomic. Each touches keys of one hash tag only.

/// Consumes a ticket if it belongs to the virtual proxy. KEYS: ticket. ARGV: virtual proxy.
/// Returns the stored user record, or nil.
pub(super) const TAKE_TICKET: &str = r"
if redis.call('HGET', KEYS[1], 'vp') ~= ARGV[1] then return false end
local record = redis.call('HGET', KEYS[1], 'rec')
redis.call('DEL', KEYS[1])
return record
";

/// Consumes a login in flight if the caller's binding hash is the one it was stored with.
/// KEYS: login. ARGV: binding hash. Returns the record; 0 when another browser started the
/// login (which stays); nil when there is none.
pub(super) const CLAIM_LOGIN: &str = r"
local record = redis.call('GET', KEYS[1])
if not record then return false end
if cjson.decode(record)['binding_hash'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return record
";

/// Creates a session under the user's cap. KEYS: user index, new session.
/// ARGV: cap, policy ('refuse' | 'evict'), now ms, new id, session key prefix, ttl ms,
/// absolute expiry ms, then the session's fields as name/value pairs.
/// Returns {'cap'} when refused, else {'ok', {id, fields, id, fields, ...}} of evicted sessions.
pub(super) const CREATE_SESSION: &str = r"
local index, prefix = KEYS[1], ARGV[5]
for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if redis.call('EXISTS', prefix .. id) == 0 then redis.call('ZREM', index, id) end
end
local cap, count = tonumber(ARGV[1]), redis.call('ZCARD', index)
local evicted = {}
if count >= cap then
  if ARGV[2] == 'refuse' then return {'cap'} end
  for _, id in ipairs(redis.call('ZRANGE', index, 0, count - cap)) do
    table.insert(evicted, id)
    table.insert(evicted, redis.call('HGETALL', prefix .. id))
    redis.call('DEL', prefix .. id)
    redis.call('ZREM', index, id)
  end
end
local fields = {}
for i = 8, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', index, ARGV[3], ARGV[4])
local keep = tonumber(ARGV[7]) - tonumber(ARGV[3])
if redis.call('PTTL', index) < keep then redis.call('PEXPIRE', index, keep) end
return {'ok', evicted}
";

/// Slides a session's inactivity expiry. KEYS: session. ARGV: activity time ms, now ms.
/// Returns {ttl ms, fields}, or nil when the session does not exist or has expired.
pub(super) const TOUCH_SESSION: &str = r"
local f = redis.call('HMGET', KEYS[1], 'last', 'idle', 'abs')
if not f[1] then return false end
local last = math.max(tonumber(f[1]), tonumber(ARGV[1]))
local ttl = math.min(last + tonumber(f[2]), tonumber(f[3])) - tonumber(ARGV[2])
if ttl <= 0 then return false end
redis.call('HSET', KEYS[1], 'last', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
return {string.format('%.0f', ttl), redis.call('HGETALL', KEYS[1])}
";

/// Deletes one session. KEYS: session, user index. ARGV: session id.
/// Returns the deleted session's fields, or nil.
pub(super) const DELETE_SESSION: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return fields
";

/// Deletes all sessions of a user index. KEYS: user index. ARGV: session key prefix.
/// Returns {id, fields, id, fields, ...} of the deleted sessions.
pub(super) const DELETE_USER_SESSIONS: &str = r"
local deleted = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields > 0 then
    redis.call('DEL', ARGV[1] .. id)
    table.insert(deleted, id)
    table.insert(deleted, fields)
  end
end
redis.call('DEL', KEYS[1])
return deleted
";
