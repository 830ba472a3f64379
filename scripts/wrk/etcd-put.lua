-- wrk script: etcd puts through its JSON gateway, 256-byte values to keys
-- drawn from 4,096 (key and value base64, as the gateway wants; encoded once
-- at start so the generator's own cost per request stays small).
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for j = 3, 0, -1 do
      local k = math.floor(n / 64 ^ j) % 64
      q[#q + 1] = chars:sub(k + 1, k + 1)
    end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

local value = b64(string.rep("v", 256))
local bodies = {}
for k = 0, 4095 do
  bodies[k] = '{"key":"' .. b64("wrk-" .. k) .. '","value":"' .. value .. '"}'
end
local headers = { ["Content-Type"] = "application/json" }

request = function()
  return wrk.format("POST", "/v3/kv/put", headers, bodies[math.random(0, 4095)])
end
