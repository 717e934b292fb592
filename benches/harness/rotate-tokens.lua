-- wrk script for scripts/bench: GET /bench through Envoy, rotating the Authorization header over
-- the tokens in the file named by $BENCH_TOKENS (one per line). wrk reports every answer that is
-- not 2xx/3xx as "Non-2xx or 3xx responses".
local tokens = {}
local i = 0

function init(args)
  local path = os.getenv("BENCH_TOKENS")
  for line in io.lines(path) do
    if #line > 0 then
      tokens[#tokens + 1] = "Bearer " .. line
    end
  end
  wrk.headers["Host"] = "bench.local"
end

function request()
  i = i % #tokens + 1
  wrk.headers["Authorization"] = tokens[i]
  return wrk.format("GET", "/bench")
end
