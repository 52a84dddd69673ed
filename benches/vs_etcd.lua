-- wrk script for benches/vs_etcd.sh: one write per request, a fresh key each time,
-- 1 KiB values, every answer checked.
--
-- VS_TARGET=etcd  POST /v3/kv/put {"key": <base64>, "value": <base64 of 1,024 bytes>}
-- VS_TARGET=slct  PUT /state/<fresh id> {"data": <1,024-character string>,
--                 "selects": [{"id": "g", "cases": [{"op": "recv", "chan": <fresh id>}]}]}
--                 (the state waits on a channel of its own: no queue grows across
--                 requests, as no etcd key does)
-- VS_RUN          a tag unique to the run (letters and digits), so keys never repeat.
--
-- done() prints one line the shell script parses:
--   RESULT requests= duration_us= rate= p50_us= p90_us= p99_us= max_us= non2xx= sockerr=
-- and FIRST_ERROR <status> <body> if any answer was not a 2xx.

local target = os.getenv("VS_TARGET") or "slct"
local run = os.getenv("VS_RUN") or "run0"

-- etcd's JSON gateway takes base64 keys. Any string of base64 letters whose length is a
-- multiple of four is valid base64 and decodes to distinct bytes, so the key is built in
-- base64 directly (no encoding work in the client): run tag padded to 8, thread, counter.
local etcd_value = string.rep("QUJD", 341) .. "QQ==" -- "ABC" x 341 + "A": 1,024 bytes
local slct_data = string.rep("x", 1024)

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  non2xx = 0
  first_error = nil
  tag = string.format("%-8s", run):sub(1, 8):gsub(" ", "A")
end

function request()
  counter = counter + 1
  if target == "etcd" then
    local key = string.format("%s%02d%010d", tag, tid, counter) -- 20 letters
    local body = '{"key":"' .. key .. '","value":"' .. etcd_value .. '"}'
    return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, body)
  end
  local id = string.format("vs-%s-%d-%d", run, tid, counter)
  local body = '{"data":"' .. slct_data .. '","selects":[{"id":"g","cases":[{"op":"recv","chan":"'
    .. id .. '"}]}]}'
  return wrk.format("PUT", "/state/" .. id, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == nil then
      first_error = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local bad, sample = 0, nil
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    sample = sample or thread:get("first_error")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rate=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad, e.connect + e.read + e.write + e.timeout))
  if sample then
    io.write("FIRST_ERROR " .. sample:gsub("\n", " ") .. "\n")
  end
end
