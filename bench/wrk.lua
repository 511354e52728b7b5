-- bench/wrk.lua - what bench.py asks of wrk: the request (method, body and
-- headers from the environment) and, at the end, one JSON line with the
-- figures bench.py reads (latencies in microseconds).
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local ctype = os.getenv("BENCH_CTYPE")

wrk.method = method
if body and body ~= "" then
   wrk.body = body
end
if ctype and ctype ~= "" then
   wrk.headers["Content-Type"] = ctype
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH-JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean))
end
