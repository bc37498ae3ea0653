-- wrk script for the flood stage: every request carries a session cookie made up on the spot
-- (43 random base64url characters, the shape of a real token), as a client guessing or
-- flooding does. With no session behind it, each is a miss of the session cache and, for a
-- GET to a virtual proxy with an authentication module, a login start. Each connection waits
-- 8 ms before each request: with 20 connections, at most about 2,500 requests a second, what
-- one client reached against a node before it had flood limits. A flood bounded like this
-- measures what it costs the control plane and other users, not only who wins the CPU.
--   wrk ... -s tests/bench/random_cookies.lua URL -- COOKIE_NAME

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local name = "X-Qlik-Session"

local threads = 0
function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end

function init(args)
    name = args[1] or name
    math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
    local token = {}
    for i = 1, 43 do
        local n = math.random(1, 64)
        token[i] = alphabet:sub(n, n)
    end
    return wrk.format(nil, nil, { Cookie = name .. "=" .. table.concat(token) })
end

function delay()
    return 8
end
