-- wrk script for benchmarks/auth_flood.py: a paced flood of requests, stopped at a count.
--
--   wrk -t T -c C -d SECONDS -s auth_flood.lua URL -- KIND PER_THREAD INTERVAL_MS SECONDS
--
-- KIND "flood": unauthenticated requests, alternately a guessed key on POST /v1/decisions and
-- no key on POST /v1/outcomes/batch (as a key-guessing client would send them); KIND
-- "control": as many POSTs to /v1/health, which need no key (the router refuses the method).
-- Each connection sends its next request INTERVAL_MS after the previous answer, at half that
-- while its thread is behind the schedule of PER_THREAD evenly over SECONDS (the answer's own
-- time and the timer's slack are not in INTERVAL_MS; LuaJIT's clock has whole seconds), and
-- each thread stops after PER_THREAD answers. done() prints one line: "statuses 401:30,429:4970".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  kind = args[1] or "flood"
  per_thread = tonumber(args[2] or "1000")
  interval = tonumber(args[3] or "10")
  seconds = tonumber(args[4] or "30")
  answered = 0
  counts = {}
  local body = '{"tool": "refund_payment"}'
  local json = {["Content-Type"] = "application/json"}
  if kind == "control" then
    requests = {wrk.format("POST", "/v1/health", json, body)}
  else
    requests = {
      wrk.format("POST", "/v1/decisions", {["Content-Type"] = "application/json",
                 ["Authorization"] = "Bearer clr_0123456789abcdef_" .. string.rep("x", 32)}, body),
      wrk.format("POST", "/v1/outcomes/batch", json, body),
    }
  end
  sent = 0
end

function request()
  sent = sent + 1
  return requests[(sent % #requests) + 1]
end

function delay()
  local now = os.time()
  if started == nil then
    started = now
  end
  if sent < per_thread * (now - started) / seconds then
    return interval / 2  -- behind the schedule: catch up gently, not in a burst
  end
  return interval
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  answered = answered + 1
  -- thread:get copies plain values between the threads' interpreters, not tables: the counts
  -- are kept as text too (a few status codes, so this is cheap)
  local parts = {}
  for code, n in pairs(counts) do
    table.insert(parts, code .. ":" .. n)
  end
  counts_text = table.concat(parts, ",")
  if answered >= per_thread then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local text = thread:get("counts_text")
    for code, n in string.gmatch(text or "", "(%d+):(%d+)") do
      total[code] = (total[code] or 0) + tonumber(n)
    end
  end
  local parts = {}
  for code, n in pairs(total) do
    table.insert(parts, code .. ":" .. n)
  end
  io.write("statuses " .. table.concat(parts, ",") .. "\n")
end
