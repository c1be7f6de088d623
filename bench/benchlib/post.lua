-- wrk script of the bench: POST $BENCH_BODY (JSON) to the URL; headers come from wrk -H.
-- Counts replies whose status is not $BENCH_EXPECT (default 200) and prints one SUMMARY
-- line that benchlib/load.py parses.
local body = os.getenv("BENCH_BODY") or '{"model":"gpt-image-1","prompt":"a red fox","n":1}'
local expect = tonumber(os.getenv("BENCH_EXPECT") or "200")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, resp_body)
  if status ~= expect then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  io.write(string.format(
    "SUMMARY requests=%d duration_us=%d bad_status=%d p50_us=%d p90_us=%d p99_us=%d " ..
    "max_us=%d errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d\n",
    summary.requests, summary.duration, total_bad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
