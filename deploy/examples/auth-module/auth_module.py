#!/usr/bin/env python3
"""A minimal Gatehouse authentication module for the ticket flow. DEMO ONLY: it believes any
user name typed into it. Copy it and replace `authenticate()` with a real check.

    python3 deploy/examples/auth-module/auth_module.py --endpoint 127.0.0.1:4243 --listen 127.0.0.1:8000

The flow, as QPS modules know it:
  1. A data-plane node sends a browser without a session here:
     GET /?proxyRestUri=https://host/qps/{prefix}/&targetId=<id>
  2. The module shows a login form (or takes `?user=` directly) and authenticates the user.
  3. It calls RequestTicket with the virtual proxy (the last path segment of proxyRestUri) and
     the targetId, and gets a one-time ticket and the URL the browser first asked for.
  4. It redirects the browser to that URL with `qlikTicket=<ticket>` appended; the node
     redeems the ticket and sets the session cookie.
"""

import argparse
import html
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import grpc

# The generated-stub helper is shared with the Python example.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import gatehouse_client  # noqa: E402

FORM = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<p><strong>DEMO ONLY:</strong> this module believes any name.</p>
<form method="post" action="/">
  <input type="hidden" name="proxyRestUri" value="{proxy_rest_uri}">
  <input type="hidden" name="targetId" value="{target_id}">
  <label>User <input name="user" autofocus required></label>
  <button type="submit">Sign in</button>
</form>
</body></html>
"""


def authenticate(params, directory):
    """Who the user is, as (directory, user id, attributes), or None.

    DEMO ONLY: the name given is believed. A real module checks a password, a certificate, a
    SAML or OIDC assertion here, and asserts the groups it knows as attributes.
    """
    name = params.get("user", [""])[0].strip()
    if not name:
        return None
    return directory, name, [("group", "demo")]


def virtual_proxy_of(proxy_rest_uri):
    """`https://host/qps/sales/` → `sales`; `https://host/qps//` → `` (the default proxy)."""
    path = urlsplit(proxy_rest_uri).path
    if path.endswith("/"):
        path = path[:-1]
    return path.rsplit("/", 1)[-1]


def with_ticket(target_uri, ticket):
    separator = "&" if "?" in target_uri else "?"
    return f"{target_uri}{separator}qlikTicket={quote(ticket, safe='')}"


class Handler(BaseHTTPRequestHandler):
    # Set by main(): the generated stubs, the Authentication API client and the directory.
    api = None
    tickets = None
    directory = "DEMO"

    def do_GET(self):
        self.handle_login(parse_qs(urlsplit(self.path).query))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        self.handle_login(parse_qs(body))

    def handle_login(self, params):
        proxy_rest_uri = params.get("proxyRestUri", [""])[0]
        target_id = params.get("targetId", [""])[0]
        if urlsplit(proxy_rest_uri).scheme not in ("http", "https") or not target_id:
            return self.page(400, "Open the application itself: it sends you here to sign in.")
        user = authenticate(params, self.directory)
        if user is None:
            return self.page(
                200,
                FORM.format(proxy_rest_uri=html.escape(proxy_rest_uri), target_id=html.escape(target_id)),
                raw=True,
            )
        directory, user_id, attributes = user
        request = self.api.authentication_pb2.RequestTicketRequest(
            virtual_proxy=virtual_proxy_of(proxy_rest_uri),
            user=self.api.common_pb2.User(
                user_directory=directory,
                user_id=user_id,
                attributes=[self.api.common_pb2.Attribute(name=n, value=v) for n, v in attributes],
            ),
            target_id=target_id,
        )
        try:
            issued = self.tickets.RequestTicket(request, timeout=10)
        except grpc.RpcError as error:
            # The detail goes to the log, not to the browser.
            self.log_error("RequestTicket failed: %s", gatehouse_client.describe(error))
            return self.page(503, "Sign-in is unavailable right now. Try again.")
        if not issued.HasField("target_uri"):
            # The target expired (or never existed): the browser must start again.
            return self.page(400, "Your sign-in took too long. Open the application again.")
        self.send_response(302)
        self.send_header("Location", with_ticket(issued.target_uri, issued.ticket))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def page(self, status, text, raw=False):
        body = (text if raw else f"<!doctype html><p>{html.escape(text)}</p>\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description="DEMO ONLY Gatehouse authentication module (ticket flow)")
    parser.add_argument("--endpoint", default="127.0.0.1:4243", help="control plane host:port")
    parser.add_argument("--ca", help="CA certificate (PEM): use TLS")
    parser.add_argument("--cert", help="client certificate (PEM), in tls.roles.admin")
    parser.add_argument("--key", help="client key (PEM)")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="host:port to serve on (port 0: any)")
    parser.add_argument("--directory", default="DEMO", help="user directory of every user")
    args = parser.parse_args()

    Handler.api = gatehouse_client.load()
    channel = gatehouse_client.channel(args.endpoint, args.ca, args.cert, args.key)
    Handler.tickets = Handler.api.authentication_pb2_grpc.AuthenticationServiceStub(channel)
    Handler.directory = args.directory

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    # The first line on stdout says where it listens (tests start it on port 0).
    print(f"auth module listening on http://{host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
