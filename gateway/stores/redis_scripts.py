"""The Lua scripts behind RedisCounters. Each runs atomically on the server; every key they
touch shares the `{prefix}` hash tag, so they also run on Redis Cluster."""

# ARGV[1] = n counters; per counter (amount, limit or -1, ttl); then the hold's expiry score
# and ttl (0: no hold). KEYS: the n counters, then the holds index and this hold's hash.
# Check all, then charge all and remember what was charged under the hold.
RESERVE = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local limit = tonumber(ARGV[3 * i])
  if limit >= 0 and cur + tonumber(ARGV[3 * i - 1]) > limit then
    return {i, cur}
  end
end
local out = {0}
local hold_ttl = tonumber(ARGV[3 * n + 3])
for i = 1, n do
  local amount = ARGV[3 * i - 1]
  out[i + 1] = redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[3 * i + 1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  if hold_ttl > 0 and tonumber(amount) ~= 0 then
    redis.call('HSET', KEYS[n + 2], KEYS[i], amount)
  end
end
if hold_ttl > 0 then
  redis.call('ZADD', KEYS[n + 1], ARGV[3 * n + 2], KEYS[n + 2])
  redis.call('EXPIRE', KEYS[n + 2], hold_ttl)
end
return out
"""

# Settles finished calls. KEYS[1] = holds index; then per call its hold hash and its counters.
# ARGV[1] = how many calls; per call: how many counters, then per counter (reserved, actual,
# ttl). A hold already released by the sweeper (the call outlived it) gets its full actual
# charged; otherwise the difference. Either way nothing is released twice.
RELEASE = """
local k = 2
local a = 2
for s = 1, tonumber(ARGV[1]) do
  local live = redis.call('DEL', KEYS[k])
  redis.call('ZREM', KEYS[1], KEYS[k])
  local lines = tonumber(ARGV[a])
  k = k + 1
  a = a + 1
  for i = 1, lines do
    local delta = tonumber(ARGV[a + 1])
    if live == 1 then delta = delta - tonumber(ARGV[a]) end
    if delta ~= 0 then
      redis.call('INCRBY', KEYS[k], delta)
      local ttl = tonumber(ARGV[a + 2])
      if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    end
    k = k + 1
    a = a + 3
  end
end
return 1
"""

# Releases holds whose calls never settled (their gateway died). KEYS[1] = holds index;
# ARGV = now, at most how many. The counters named in a hold share its hash tag.
SWEEP = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, hold in ipairs(expired) do
  local fields = redis.call('HGETALL', hold)
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', fields[i]) == 1 then
      redis.call('DECRBY', fields[i], fields[i + 1])
    end
  end
  redis.call('DEL', hold)
  redis.call('ZREM', KEYS[1], hold)
end
return #expired
"""

# KEYS: counters then tables. ARGV[1]: how many counters; then per counter (delta, ttl);
# then per table (field, amount, ttl).
SETTLE = """
local n = tonumber(ARGV[1])
local a = 2
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  a = a + 2
end
for i = n + 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])
  local ttl = tonumber(ARGV[a + 2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  a = a + 3
end
return 1
"""
