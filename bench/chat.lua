-- wrk script: POST the JSON body read from the file named by the first script
-- argument (with "Authorization: Bearer <second argument>" when there is one),
-- and count answers outside 2xx, keeping the first one so that the
-- runner can show what the server said. With a third argument, a file of API
-- keys (one a line), each request carries one of them picked at random: the
-- load of many users at once.
--   wrk -t1 -c16 -d10s --latency -s bench/chat.lua URL -- body.json [api-key [keys-file]]

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
  if args[2] ~= nil and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
  if args[3] ~= nil and args[3] ~= "" then
    -- Every request is prepared here; request() only picks one.
    local prepared = {}
    for key in io.lines(args[3]) do
      if key ~= "" then
        wrk.headers["Authorization"] = "Bearer " .. key
        table.insert(prepared, wrk.format())
      end
    end
    assert(#prepared > 0, "no keys in " .. args[3])
    math.randomseed(os.time() + tonumber(tostring(prepared):match("0x(%x+)") or "0", 16))
    local n = #prepared
    request = function()
      return prepared[math.random(n)]
    end
  end
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 2000)
    end
  end
end

function done(summary, latency, requests)
  local total, first = 0, ""
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
    local fb = t:get("first_bad")
    if first == "" and fb ~= nil then first = fb end
  end
  io.write(string.format("BENCH_NON2XX %d\n", total))
  if first ~= "" then
    io.write("BENCH_FIRST_NON2XX " .. string.gsub(first, "[\r\n]", " ") .. "\n")
  end
end
