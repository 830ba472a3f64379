-- wrk script: kv-server puts of 256-byte values to keys drawn from 4,096.
-- A second, lighter load generator than `kvctl bench` (scripts/bench-vs-etcd.sh --wrk,
-- scripts/bench-tls.sh --wrk). With KV_TOKEN set, sends it as a bearer token.
--
-- With KV_WRK_SPIN=N, each request first spends N rounds of arithmetic in Lua:
-- a generator made slower on purpose, without TLS, for the control runs of
-- scripts/bench-tls-alternating.sh --control (does a slower generator alone cost
-- the servers what HTTPS costs them?).
local value = string.rep("v", 256)
local body = '{"value":"' .. value .. '"}'
local headers = { ["Content-Type"] = "application/json" }
local token = os.getenv("KV_TOKEN")
if token ~= nil and token ~= "" then
  headers["Authorization"] = "Bearer " .. token
end
local spin = tonumber(os.getenv("KV_WRK_SPIN") or "") or 0
-- Global, so that LuaJIT cannot drop the loop as dead code.
spun = 0

request = function()
  for i = 1, spin do
    spun = (spun * 31 + i) % 1000003
  end
  return wrk.format("PUT", "/v1/kv/wrk-" .. math.random(0, 4095), headers, body)
end
