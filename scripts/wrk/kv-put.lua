-- wrk script: kv-server puts of 256-byte values to keys drawn from 4,096.
-- A second, lighter load generator than `kvctl bench` (scripts/bench-vs-etcd.sh --wrk,
-- scripts/bench-tls.sh --wrk). With KV_TOKEN set, sends it as a bearer token.
local value = string.rep("v", 256)
local body = '{"value":"' .. value .. '"}'
local headers = { ["Content-Type"] = "application/json" }
local token = os.getenv("KV_TOKEN")
if token ~= nil and token ~= "" then
  headers["Authorization"] = "Bearer " .. token
end

request = function()
  return wrk.format("PUT", "/v1/kv/wrk-" .. math.random(0, 4095), headers, body)
end
