-- get: the identity record of wa_id ARGV[3] with its history and acknowledgements.
-- Returns { HGETALL of the user, history (JSON each), acks (JSON each) }.
local k = ukey(canon(ARGV[3]))
return { redis.call('HGETALL', k), redis.call('LRANGE', k .. ':history', 0, 49),
         redis.call('LRANGE', k .. ':acks', 0, 49) }
