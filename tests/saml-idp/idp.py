#!/usr/bin/env python3
"""A SAML 2.0 identity provider for Gatehouse's end-to-end tests, on pysaml2 (pinned in
tests/setup.sh), listening on loopback only.

    idp.py --port PORT --key KEY --cert CERT --other-key KEY --other-cert CERT
           --sp-metadata-url URL --metadata-out FILE
           [--slo-binding redirect|post] [--want-signed-logout]

It writes its own metadata (entity id, signing certificate, HTTP-Redirect SSO endpoint) to
FILE and prints "ready" once listening. The service provider's metadata is read from the node
(`/{prefix}/saml/metadata`) at the first login, when the node is up.

- GET /sso/redirect?SAMLRequest=..&RelayState=..[&user=alice][&sign=assertion]: the real
  Web Browser SSO answer: pysaml2 parses the AuthnRequest and answers the HTML form that
  posts a Response to the ACS the request names. `sign` is assertion (default), response,
  both or none.
  With `encrypt=aes128-cbc|aes256-cbc|aes128-gcm|aes256-gcm|native` (and
  `key-transport=oaep|rsa-1_5`) the assertion is encrypted for the service provider with the
  certificate its metadata announces for encryption (`encrypted_response`).
  With `want-signed=1` the AuthnRequest must be signed (`parse_signed_request`): a missing
  or wrong SigAlg/Signature is a 400.
- GET /metadata: the same metadata, for `idp_metadata_url`.
- POST /sign?what=assertion|response|both[&key=other]: signs the Response XML in the body
  with the identity provider's key (or another one), as pysaml2 signs its own; the tests
  alter an unsigned Response first, so that each refusal is about one thing.

Single Logout (see the `slo_*` functions):
- GET /slo/redirect: the SingleLogoutService (`--slo-binding redirect`, the default). With
  SAMLRequest (the service provider's LogoutRequest), pysaml2 parses it, remembers its
  NameID and SessionIndex, and redirects the browser back with a LogoutResponse signed over
  the query. With SAMLResponse (the service provider's answer to a logout started here), it
  answers 200 "logout answered: STATUS".
- POST /slo/post: the same over HTTP-POST (`--slo-binding post`: the metadata then names
  only this one); the LogoutResponse to the service provider is an auto-posting form with
  an enveloped signature.
- With `--want-signed-logout` every logout message from the service provider must be
  signed by a certificate its metadata announces for signing: LogoutRequests are parsed as
  by an identity provider that wants signed requests (`want_authn_requests_signed`: the query
  signature over HTTP-Redirect, the XML signature over HTTP-POST), and LogoutResponses are
  checked the same way (pysaml2 checks no signature on those by itself). A message that
  fails is a 400 with pysaml2's reason.
- GET /slo/seen: the LogoutRequests received, as JSON lines {"name_id", "session_index"}.
- GET /slo/start?destination=URL&name_id=..[&session_index=..][&binding=redirect|post]
  [&sign=own|other|none]: an IdP-initiated LogoutRequest to the service provider at URL,
  as pysaml2 makes it: for redirect the URL to send the browser to, for post the base64
  SAMLRequest to post there (RelayState "idp-relay").
"""

import argparse
import base64
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp, saml
from saml2.config import IdPConfig
from saml2.pack import http_redirect_message
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.sigver import pre_signature_part, verify_redirect_signature
from saml2 import class_name
from saml2.sigver import (  # for encrypted_response
    RSA_1_5,
    RSA_OAEP_MGF1P,
    get_pem_wrapped_unwrapped,
    make_temp,
    pre_encrypt_assertion,
    pre_encryption_part,
    signed_instance_factory,
)
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

USERS = {
    "alice": {"uid": ["alice"], "mail": ["alice@example.com"], "eduPersonAffiliation": ["sales", "admins"]},
    "bob": {"uid": ["bob"], "mail": ["bob@example.com"], "eduPersonAffiliation": ["staff"]},
}


def config(args, with_sp):
    base = f"http://127.0.0.1:{args.port}"
    settings = {
        "entityid": f"{base}/metadata",
        "service": {
            "idp": {
                "endpoints": {
                    "single_sign_on_service": [(f"{base}/sso/redirect", BINDING_HTTP_REDIRECT)],
                    **slo_endpoints(base, args.slo_binding),
                },
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "want_authn_requests_signed": False,
                "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
            }
        },
        "key_file": args.key,
        "cert_file": args.cert,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "metadata": {"remote": [{"url": args.sp_metadata_url}]} if with_sp else {},
    }
    idp_config = IdPConfig()
    idp_config.load(settings)
    return idp_config


def slo_endpoints(base, binding):
    """The SingleLogoutService the metadata announces."""
    if binding == "post":
        return {"single_logout_service": [(f"{base}/slo/post", BINDING_HTTP_POST)]}
    return {"single_logout_service": [(f"{base}/slo/redirect", BINDING_HTTP_REDIRECT)]}


def slo_parse_request(handler, fields, binding):
    """The service provider's LogoutRequest, its signature checked with --want-signed-logout."""
    if not handler.server.args.want_signed_logout:
        return handler.idp().parse_logout_request(fields["SAMLRequest"], binding).message
    return strict_idp(handler.server).parse_logout_request(
        fields["SAMLRequest"],
        binding,
        relay_state=fields.get("RelayState"),
        sigalg=fields.get("SigAlg"),
        signature=fields.get("Signature"),
    ).message


def slo_answer_request(handler, fields, binding):
    """The service provider's LogoutRequest: remembered, and answered with a signed
    LogoutResponse to the service provider's SingleLogoutService over `binding`: the
    Location to redirect to, or the auto-posting form."""
    idp = handler.idp()
    request = slo_parse_request(handler, fields, binding)
    handler.server.slo_seen.append(
        {
            "name_id": request.name_id.text if request.name_id is not None else None,
            "format": request.name_id.format if request.name_id is not None else None,
            "session_index": [index.text for index in request.session_index],
            "issuer": request.issuer.text if request.issuer is not None else None,
            "binding": binding,
            "signed": request.signature is not None or "Signature" in fields,
        }
    )
    if binding == BINDING_HTTP_POST:
        # Signed, pysaml2 hands back the XML text.
        xml = str(
            idp.create_logout_response(
                request, [BINDING_HTTP_POST], sign=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
            )
        )
        destination = samlp.logout_response_from_string(xml).destination
        form = idp.apply_binding(BINDING_HTTP_POST, xml, destination, fields.get("RelayState", ""), response=True)
        return form["data"]
    response = idp.create_logout_response(request, [BINDING_HTTP_REDIRECT])
    binding = idp.apply_binding(
        BINDING_HTTP_REDIRECT,
        str(response),
        response.destination,
        fields.get("RelayState", ""),
        response=True,
        sign=True,
        sigalg=SIG_RSA_SHA256,
    )
    return dict(binding["headers"])["Location"]


def slo_read_response(handler, fields, binding):
    """The service provider's answer to a logout started here: its status, the signature
    checked with --want-signed-logout against the certificates the SP metadata announces
    for signing."""
    idp = handler.idp()
    if handler.server.args.want_signed_logout:
        sp_certs = idp.metadata.certs(slo_sp_entity(idp), "any", "signing")
        if not sp_certs:
            raise ValueError("the SP metadata announces no signing certificate")
        if binding == BINDING_HTTP_REDIRECT:
            if "SigAlg" not in fields or "Signature" not in fields:
                raise ValueError("the LogoutResponse is not signed")
            names = ("SAMLResponse", "RelayState", "SigAlg", "Signature")
            message = {name: fields[name] for name in names if name in fields}
            if not any(verify_redirect_signature(message, idp.sec.sec_backend, cert) for _, cert in sp_certs):
                raise ValueError("the LogoutResponse's query signature does not verify")
        else:
            xml = base64.b64decode(fields["SAMLResponse"]).decode()
            idp.sec.correctly_signed_logout_response(xml, must=True)
    response = idp.parse_logout_request_response(fields["SAMLResponse"], binding)
    return response.response.status.status_code.value if response else "unreadable"


def slo_start(handler, query):
    """An IdP-initiated LogoutRequest for the service provider at `destination`."""
    idp = handler.idp()
    sign = query.get("sign", "own")
    signer = handler.server.other if sign == "other" else handler.server.own
    index = query.get("session_index")
    _, request = idp.create_logout_request(
        query["destination"],
        slo_sp_entity(idp),
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=query["name_id"]),
        session_indexes=[index] if index else None,
        sign=False,
    )
    if query.get("binding", "redirect") == "redirect":
        headers = http_redirect_message(
            str(request),
            query["destination"],
            "idp-relay",
            "SAMLRequest",
            sigalg=SIG_RSA_SHA256,
            sign=sign != "none",
            backend=signer.sec_backend,
        )["headers"]
        return dict(headers)["Location"]
    xml = str(request)
    if sign != "none":
        request.signature = pre_signature_part(
            request.id, signer.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
        )
        xml = signer.sign_statement(str(request), f"{samlp.NAMESPACE}:LogoutRequest", node_id=request.id)
    return base64.b64encode(xml.encode()).decode()


def slo_sp_entity(idp):
    """The one service provider in the identity provider's metadata."""
    return next(iter(idp.metadata.with_descriptor("spsso")))


def slo_get(handler, url, query):
    """The Single Logout routes; False when `url` is none of them."""
    if url.path == "/slo/redirect" and "SAMLRequest" in query:
        location = slo_answer_request(handler, query, BINDING_HTTP_REDIRECT)
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    elif url.path == "/slo/redirect" and "SAMLResponse" in query:
        handler.answer(200, f"logout answered: {slo_read_response(handler, query, BINDING_HTTP_REDIRECT)}")
    elif url.path == "/slo/seen":
        handler.answer(200, "\n".join(json.dumps(seen) for seen in handler.server.slo_seen), "application/json")
    elif url.path == "/slo/start":
        handler.answer(200, slo_start(handler, query))
    else:
        return False
    return True


def slo_post(handler, form):
    """POST /slo/post: the service provider's LogoutRequest or LogoutResponse."""
    if "SAMLRequest" in form:
        return handler.answer(200, slo_answer_request(handler, form, BINDING_HTTP_POST), "text/html")
    if "SAMLResponse" in form:
        return handler.answer(200, f"logout answered: {slo_read_response(handler, form, BINDING_HTTP_POST)}")
    return handler.answer(400, "no SAMLRequest or SAMLResponse")


class Handler(BaseHTTPRequestHandler):
    server_version = "gatehouse-test-idp"

    def log_message(self, *_):
        pass

    def answer(self, status, body, content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def idp(self):
        # Built at the first login: the node serving the SP metadata is up by then.
        if self.server.idp is None:
            self.server.idp = Server(config=config(self.server.args, with_sp=True))
        return self.server.idp

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/metadata":
            with open(self.server.args.metadata_out) as metadata:
                return self.answer(200, metadata.read(), "application/samlmetadata+xml")
        if url.path.startswith("/slo/"):
            try:
                if slo_get(self, url, query):
                    return None
            except Exception as error:  # the test reads the reason
                return self.answer(400, f"{type(error).__name__}: {error}")
        if url.path != "/sso/redirect" or "SAMLRequest" not in query:
            return self.answer(404, "not found")
        try:
            idp = self.idp()
            request = idp.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT).message
            if "want-signed" in query:
                request = parse_signed_request(self.server, query)
            user = query.get("user", "alice")
            sign = query.get("sign", "assertion")
            response = idp.create_authn_response(
                USERS[user],
                in_response_to=request.id,
                destination=request.assertion_consumer_service_url,
                sp_entity_id=request.issuer.text,
                name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=user),
                authn={"class_ref": saml.AUTHN_PASSWORD_PROTECTED},
                sign_assertion=sign in ("assertion", "both"),
                sign_response=sign in ("response", "both"),
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
            if "encrypt" in query:
                response = encrypted_response(idp, request, query)
            form = idp.apply_binding(
                BINDING_HTTP_POST,
                str(response),
                request.assertion_consumer_service_url,
                query.get("RelayState", ""),
                response=True,
            )
        except Exception as error:  # the test reads the reason
            return self.answer(400, f"{type(error).__name__}: {error}")
        self.answer(200, form["data"], "text/html")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        if url.path == "/slo/post":
            try:
                return slo_post(self, dict(urllib.parse.parse_qsl(body)))
            except Exception as error:  # the test reads the reason
                return self.answer(400, f"{type(error).__name__}: {error}")
        if url.path != "/sign":
            return self.answer(404, "not found")
        try:
            other = query.get("key") == "other"
            signer = self.server.other if other else self.server.own
            response = samlp.response_from_string(body)
            what = query.get("what", "assertion")
            signed = str(response)
            if what in ("assertion", "both"):
                assertion = response.assertion[0] if isinstance(response.assertion, list) else response.assertion
                assertion.signature = pre_signature_part(
                    assertion.id, signer.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
                )
                signed = signer.sign_statement(str(response), f"{saml.NAMESPACE}:Assertion", node_id=assertion.id)
                response = samlp.response_from_string(signed)
            if what in ("response", "both"):
                response.signature = pre_signature_part(
                    response.id, signer.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
                )
                signed = signer.sign_statement(str(response), f"{samlp.NAMESPACE}:Response", node_id=response.id)
        except Exception as error:
            return self.answer(400, f"{type(error).__name__}: {error}")
        self.answer(200, signed, "application/xml")


def strict_idp(server):
    """An identity provider that requires signed requests (want_authn_requests_signed):
    pysaml2 then checks SigAlg and Signature over the query, or the XML signature of a
    posted request, with the signing certificate of the SP metadata, and raises when they
    are missing or do not match."""
    if getattr(server, "strict_idp", None) is None:
        strict = config(server.args, with_sp=True)
        strict.setattr("idp", "want_authn_requests_signed", True)
        server.strict_idp = Server(config=strict)
    return server.strict_idp


def parse_signed_request(server, query):
    """The AuthnRequest of `query`, parsed by the strict identity provider."""
    return strict_idp(server).parse_authn_request(
        query["SAMLRequest"],
        BINDING_HTTP_REDIRECT,
        relay_state=query.get("RelayState"),
        sigalg=query.get("SigAlg"),
        signature=query.get("Signature"),
    ).message


# `encrypt=` of /sso/redirect: the XML Encryption algorithm of the assertion, and the session
# key xmlsec1 makes for it. "native" is pysaml2's own encrypt_assertion (Triple DES).
ENCRYPTIONS = {
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
    "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "aes-128"),
    "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", "aes-256"),
}
# `key-transport=`: how the session key is encrypted for the service provider.
KEY_TRANSPORTS = {"oaep": RSA_OAEP_MGF1P, "rsa-1_5": RSA_1_5}


def encrypted_response(idp, request, query):
    """The Response to `request` with its assertion encrypted for the service provider, with
    the certificate the SP metadata announces for encryption (use="encryption"), the way
    pysaml2's IdP does it (the assertion signed, then encrypted, then the Response signed),
    but with the algorithm `encrypt` names (pysaml2's own choice is Triple DES)."""
    user = query.get("user", "alice")
    sign = query.get("sign", "assertion")
    sp_entity_id = request.issuer.text
    certs = idp.metadata.certs(sp_entity_id, "any", "encryption")
    if not certs:
        raise ValueError("the SP metadata announces no encryption certificate")
    wrapped_cert, unwrapped_cert = get_pem_wrapped_unwrapped(certs[0][1])
    arguments = dict(
        in_response_to=request.id,
        destination=request.assertion_consumer_service_url,
        sp_entity_id=sp_entity_id,
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=user),
        authn={"class_ref": saml.AUTHN_PASSWORD_PROTECTED},
        sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
    )
    if query["encrypt"] == "native":
        return idp.create_authn_response(
            USERS[user],
            encrypt_assertion=True,
            encrypt_cert_assertion=wrapped_cert,
            sign_assertion=sign in ("assertion", "both"),
            sign_response=sign in ("response", "both"),
            **arguments,
        )
    algorithm, session_key = ENCRYPTIONS[query["encrypt"]]
    response = idp.create_authn_response(USERS[user], sign_assertion=False, sign_response=False, **arguments)
    assertion = response.assertion
    if sign in ("assertion", "both"):
        assertion.signature = pre_signature_part(
            assertion.id, idp.sec.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
        )
    response = pre_encrypt_assertion(response)
    xml = str(response)
    if sign in ("assertion", "both"):
        xml = signed_instance_factory(response, idp.sec, [(class_name(assertion), assertion.id)])
    template = pre_encryption_part(
        msg_enc=algorithm,
        key_enc=KEY_TRANSPORTS[query.get("key-transport", "oaep")],
        encrypt_cert=unwrapped_cert,
    )
    cert_file = make_temp(wrapped_cert.encode("ascii"), decode=False)
    xml = idp.sec.encrypt_assertion(xml, cert_file.name, template, key_type=session_key)
    if sign in ("response", "both"):
        response = samlp.response_from_string(xml)
        response.signature = pre_signature_part(
            response.id, idp.sec.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
        )
        xml = idp.sec.sign_statement(str(response), f"{samlp.NAMESPACE}:Response", node_id=response.id)
    return xml


def main():
    parser = argparse.ArgumentParser()
    for name in ("--port", "--key", "--cert", "--other-key", "--other-cert", "--sp-metadata-url", "--metadata-out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--slo-binding", choices=("redirect", "post"), default="redirect")
    parser.add_argument("--want-signed-logout", action="store_true")
    args = parser.parse_args()
    args.port = int(args.port)
    own_config = config(args, with_sp=False)
    with open(args.metadata_out, "w") as out:
        out.write(str(entity_descriptor(own_config)))
    other_args = argparse.Namespace(**vars(args))
    other_args.key, other_args.cert = args.other_key, args.other_cert
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.args = args
    server.idp = None
    server.slo_seen = []
    server.own = Server(config=own_config).sec
    server.other = Server(config=config(other_args, with_sp=False)).sec
    print("ready", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
