-- wrk script: POST the benchmark's JSON body; count answers other than 200 (a 202 means
-- no answer within ?wait=); at the end print one machine-readable line.
-- Used by bench/http_rpc.py: wrk -s bench/post.lua 'http://HOST:PORT/v1/ops/echo?wait=5'
-- (The count is wrk's own, not the gateway's /metrics: with `--workers N` each process
-- has its own metrics, and one scrape reaches one of them.)
wrk.method = "POST"
wrk.body = '{"n": 1, "text": "hello, benchmark"}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  not_200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    not_200 = not_200 + 1
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local others = 0
  for _, thread in ipairs(threads) do
    others = others + thread:get("not_200")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, "not_200": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, others,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
