-- register: the library's functions, named by the prefix store.c puts in front of the
-- library (WG_PREFIX: the library's version, so that instances of two versions can share
-- one Redis during an upgrade).  Functions that never write are flagged no-writes: they
-- run when Redis is out of memory, where a writing one is refused before it starts.
-- (While a library loads, Redis 7.0 offers none of Lua's globals but redis: the code
-- that runs then uses plain loops.)
for i = 1, #SCHEMA_FUNCTIONS_LIST do
  local name, writes = SCHEMA_FUNCTIONS_LIST[i][1], SCHEMA_FUNCTIONS_LIST[i][2]
  redis.register_function({ function_name = WG_PREFIX .. name, callback = FN[name],
                            flags = writes == 0 and { 'no-writes' } or {} })
end
