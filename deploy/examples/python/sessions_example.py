#!/usr/bin/env python3
"""Gatehouse from Python: request a login ticket, create a session, list sessions, delete them.

    python3 deploy/examples/python/sessions_example.py --endpoint 127.0.0.1:4243

Only the named user's sessions are deleted. Over mutual TLS, give --ca, --cert and --key (an
admin certificate; the endpoint's host must match the server certificate, e.g. localhost:4243).
Exit codes: 0 success, 1 a call failed (its gRPC status is printed), 2 bad usage.
"""

import argparse
import sys

import grpc

import gatehouse_client


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="127.0.0.1:4243", help="control plane host:port")
    parser.add_argument("--ca", help="CA certificate (PEM): use TLS")
    parser.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", help="client key (PEM) for mutual TLS")
    parser.add_argument("--virtual-proxy", default="", help='virtual proxy prefix ("" is the default proxy)')
    parser.add_argument("--directory", default="CORP", help="user directory")
    parser.add_argument("--user", default="alice", help="user id")
    args = parser.parse_args()

    api = gatehouse_client.load()
    channel = gatehouse_client.channel(args.endpoint, args.ca, args.cert, args.key)
    tickets = api.authentication_pb2_grpc.AuthenticationServiceStub(channel)
    sessions = api.session_pb2_grpc.SessionServiceStub(channel)
    user = api.common_pb2.User(
        user_directory=args.directory,
        user_id=args.user,
        attributes=[api.common_pb2.Attribute(name="group", value="example")],
    )
    try:
        # What an authentication module does: vouch for the user, get a one-time ticket.
        ticket = tickets.RequestTicket(
            api.authentication_pb2.RequestTicketRequest(virtual_proxy=args.virtual_proxy, user=user),
            timeout=10,
        )
        print(f"ticket: {ticket.ticket} (expires {ticket.expires.ToJsonString()})")

        # A session for a native client, so there is something to list.
        created = sessions.CreateSession(
            api.session_pb2.CreateSessionRequest(virtual_proxy=args.virtual_proxy, user=user),
            timeout=10,
        )
        print(f"created session {created.session.handle}")

        # Every live session, a page at a time.
        listed, page_token = [], ""
        while True:
            page = sessions.ListSessions(
                api.session_pb2.ListSessionsRequest(page_size=100, page_token=page_token), timeout=10
            )
            listed.extend(page.sessions)
            page_token = page.next_page_token
            if not page_token:
                break
        print(f"listed {len(listed)} sessions")
        for session in listed:
            print(
                f"  {session.handle}  {session.virtual_proxy or '(default)'}  "
                f"{session.user.user_directory}\\{session.user.user_id}  "
                f"expires {session.inactivity_expiry.ToJsonString()}"
            )

        # Delete this user's sessions one by one, by handle. (DeleteUserSessions does it in one call.)
        mine = [
            s
            for s in listed
            if s.user.user_directory.lower() == args.directory.lower()
            and s.user.user_id.lower() == args.user.lower()
        ]
        for session in mine:
            deleted = sessions.DeleteSession(
                api.session_pb2.DeleteSessionRequest(
                    session=api.session_pb2.SessionSelector(handle=session.handle)
                ),
                timeout=10,
            )
            print(f"deleted session {deleted.session.handle}")

        left = sessions.ListUserSessions(
            api.session_pb2.ListUserSessionsRequest(user_directory=args.directory, user_id=args.user),
            timeout=10,
        )
        print(f"{args.directory}\\{args.user} has {len(left.sessions)} sessions left")
    except grpc.RpcError as error:
        print(f"error: {gatehouse_client.describe(error)}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
