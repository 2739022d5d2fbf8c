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
-- `("x"):upper()` reaches the real string table; hide it from getmetatable("").
getmetatable("").__metatable = false

-- What every script reads as globals: the base names, and the running script's KEYS, ARGV and
-- _G (its own environment), which each run sets here. One table, so that any global is one
-- lookup past the script's (empty) environment.
local current = {}
for name, value in next, base do
  current[name] = value
end
current.KEYS, current.ARGV, current._G = false, false, false
local env_meta = { __index = current, __newindex = deny, __metatable = false }

-- Runs one script: `f` compiled, then its `nkeys` keys and `nargs` arguments (strings), which
-- become KEYS and ARGV. Returns true and the value, or false and the error (a table with `err`,
-- or a message).
--
-- Each compiled script gets its environment on its first run and keeps it: building one per run
-- (a table, its metatable, an entry in the weak `readonly` set) was garbage on every EVAL. The
-- environment has no fields of its own and refuses new ones (`__newindex`, and `rawset` and
-- `setmetatable` are refused on it), so nothing a run does to it outlives the run: as in Redis 7,
-- a script cannot assign a global, KEYS, ARGV and _G included. Its reads fall through to
-- `current`, which no script can reach (the metatable is hidden), and which each run points at
-- its own KEYS, ARGV and environment.
local envs = raw_setmt({}, { __mode = "k" })
local function run(f, nkeys, nargs, ...)
  local env = envs[f]
  if env == nil then
    env = raw_setmt({}, env_meta)
    readonly[env] = true
    raw_setfenv(f, env)
    envs[f] = env
  end
  local keys, argv = { ... }, {}
  for i = 1, nargs do
    argv[i] = keys[nkeys + i]
    keys[nkeys + i] = nil
  end
  current.KEYS, current.ARGV, current._G = keys, argv, env
  local ok, res = raw_pcall(f)
  -- Not kept alive until the next run.
  current.KEYS, current.ARGV = false, false
  if not ok and res == "not enough memory" then
    mark_oom()
  end
  return ok, res
end

return run
