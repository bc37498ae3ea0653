#!/usr/bin/env python3
"""Mints anonymous sessions through a data-plane node for the cache-miss stage.

A cookie-less GET to a virtual proxy with `anonymous = "always"` creates a session and sets
its cookie. Writes COUNT distinct cookies, one `name=value` per line, to OUT.

    mint_sessions.py PORT COUNT OUT
"""

import http.client
import sys
import threading
import time

CONNECTIONS = 2


def mint(port, indexes, cookies, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in indexes:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            set_cookies = response.msg.get_all("set-cookie") or []
            if response.status != 200 or not set_cookies:
                errors.append(f"answer {response.status} with {len(set_cookies)} cookies")
                return
            cookies[i] = set_cookies[0].split(";", 1)[0].strip()
    except (OSError, http.client.HTTPException) as error:
        errors.append(repr(error))
    finally:
        conn.close()


def main():
    port, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cookies = [None] * count
    errors = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=mint, args=(port, range(k, count, CONNECTIONS), cookies, errors))
        for k in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        sys.exit(f"mint_sessions: {errors[0]}")
    if len(set(cookies)) != count:
        sys.exit(f"mint_sessions: {len(set(cookies))} distinct cookies, wanted {count}")
    with open(out, "w", encoding="ascii") as file:
        file.write("\n".join(cookies) + "\n")
    print(f"{count} sessions in {elapsed:.1f} s ({count / elapsed:.0f}/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
