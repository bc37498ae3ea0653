-- wrk script for the cache-miss stage: every request carries the next session cookie from a
-- file (one `name=value` per line), so consecutive requests name different sessions.
--   wrk ... -s tests/bench/rotate_cookies.lua URL -- COOKIE_FILE

local threads = 0
function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end

local requests = {}
local next_request = 1

-- wrk.init has set the Host header (which wrk.format copies) before it calls init.
function init(args)
    local file = assert(io.open(args[1], "r"))
    for cookie in file:lines() do
        requests[#requests + 1] = wrk.format(nil, nil, { Cookie = cookie })
    end
    file:close()
    assert(#requests > 0, "no cookies in " .. args[1])
    -- threads start far apart, so they do not walk the list in step
    next_request = (id or 0) * 7919 % #requests + 1
end

function request()
    local r = requests[next_request]
    next_request = next_request % #requests + 1
    return r
end
