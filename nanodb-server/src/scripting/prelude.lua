-- The sandbox every script runs in, built once per Lua state (trusted code, run before any
-- script). It receives the host's functions and returns what the runner needs. Scripts see only
-- a per-run environment whose reads fall through to `base` and whose writes are refused.
local host = ...
local raw_set, raw_pcall, raw_xpcall, raw_load = rawset, pcall, xpcall, loadstring
local raw_setfenv, raw_getfenv, raw_setmt, type, error, tostring = setfenv, getfenv, setmetatable, type, error, tostring
local stopped, mark_oom, max_memory, invoke = host.stopped, host.mark_oom, host.max_memory, host.invoke
local STOPPED = "script stopped"

-- Tables a script may read but never change: the environment, the libraries, `redis`.
local readonly = raw_setmt({}, { __mode = "k" })
local function deny()
  error("Attempt to modify a readonly table", 2)
end
local function protect(t)
  local p = raw_setmt({}, { __index = t, __newindex = deny, __metatable = false })
  readonly[p] = true
  return p
end

-- After a protected call, a stopped script (deadline, kill, memory) goes on stopping: pcall
-- cannot swallow it.
local function after(ok, ...)
  if not ok and (...) == "not enough memory" then
    mark_oom()
  end
  if stopped() then
    error(STOPPED, 0)
  end
  return ok, ...
end

-- string.rep's C loop runs no Lua instruction: bound it before it starts.
local rep = string.rep
string.rep = function(s, n)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then return rep(s, n) end
  n = tonumber(n)
  if n == nil then return rep(s, n) end
  if #s == 0 or n < 1 then return "" end
  if #s * n > max_memory then
    mark_oom()
    error("string.rep: result larger than --script-max-memory", 2)
  end
  return rep(s, n)
end

-- Text chunks only (no bytecode), run in the caller's environment.
local function load_text(chunk, name)
  if type(chunk) ~= "string" then
    return nil, "only a string chunk can be loaded"
  end
  if chunk:byte(1) == 27 then
    return nil, "loading bytecode is not allowed"
  end
  local f, err = raw_load(chunk, name)
  if not f then return nil, err end
  raw_setfenv(f, raw_getfenv(2))
  return f
end

-- The host's command invoker answers the reply and whether it is an error (raised by call).
local redis = {
  call = function(...)
    local r, failed = invoke(...)
    if failed then error(r, 2) end
    return r
  end,
  pcall = function(...)
    return (invoke(...))
  end,
  status_reply = function(s) return { ok = s } end,
  error_reply = function(s) return { err = s } end,
  sha1hex = host.sha1hex,
  log = host.log,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
}

local base = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  rawequal = rawequal, rawget = rawget, select = select, tonumber = tonumber,
  tostring = tostring, type = type, unpack = unpack,
  getmetatable = getmetatable, setmetatable = setmetatable,
  rawset = function(t, k, v)
    if readonly[t] then error("Attempt to modify a readonly table", 2) end
    return raw_set(t, k, v)
  end,
  pcall = function(...) return after(raw_pcall(...)) end,
  xpcall = function(f, h) return after(raw_xpcall(f, h)) end,
  load = load_text,
  loadstring = load_text,
  string = protect(string),
  table = protect(table),
  math = protect(math),
  redis = protect(redis),
}
local env_meta = { __index = base, __newindex = deny, __metatable = false }
-- `("x"):upper()` reaches the real string table; hide it from getmetatable("").
getmetatable("").__metatable = false

-- Runs one script: `f` compiled, then its `nkeys` keys and `nargs` arguments (strings), which
-- become KEYS and ARGV. Returns true and the value, or false and the error (a table with `err`,
-- or a message).
--
-- Each compiled script gets its environment on its first run and keeps it: building one per run
-- (a table, its metatable, an entry in the weak `readonly` set) was garbage on every EVAL. Reuse
-- leaks nothing from one run to the next: the environment refuses new fields (`__newindex`,
-- `rawset` and `setmetatable` are refused on it), so its only own fields are KEYS, ARGV and _G,
-- and every run sets all three afresh (a script may assign them).
--
-- The three fields stay present between runs (KEYS and ARGV as false, so that they do not keep
-- the last run's tables alive), so a run sets them with plain assignments rather than a rawset
-- call each; a field a script removed (`KEYS = nil`) is put back with rawset.
local envs = raw_setmt({}, { __mode = "k" })
local function run(f, nkeys, nargs, ...)
  local env = envs[f]
  if env == nil then
    env = raw_setmt({ KEYS = false, ARGV = false, _G = false }, env_meta)
    readonly[env] = true
    raw_setfenv(f, env)
    envs[f] = env
  end
  local keys, argv = { ... }, {}
  for i = 1, nargs do
    argv[i] = keys[nkeys + i]
    keys[nkeys + i] = nil
  end
  if env.KEYS ~= nil then env.KEYS = keys else raw_set(env, "KEYS", keys) end
  if env.ARGV ~= nil then env.ARGV = argv else raw_set(env, "ARGV", argv) end
  if env._G ~= nil then env._G = env else raw_set(env, "_G", env) end
  local ok, res = raw_pcall(f)
  -- Not kept alive until the script's next run.
  if env.KEYS ~= nil then env.KEYS = false else raw_set(env, "KEYS", false) end
  if env.ARGV ~= nil then env.ARGV = false else raw_set(env, "ARGV", false) end
  if not ok and res == "not enough memory" then
    mark_oom()
  end
  return ok, res
end

return run
