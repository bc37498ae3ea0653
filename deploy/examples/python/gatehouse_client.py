"""Python stubs for the Gatehouse gRPC API, generated from proto/ at run time.

Nothing generated is committed: `load()` runs grpcio-tools' protoc on the repository's
`proto/gatehouse/v1/*.proto` into a temporary directory and imports the result, so the stubs
always match the contract next to them. `channel()` opens a plain, TLS or mutual-TLS channel.

Needs `pip install grpcio grpcio-tools` (versions in .ci/run).
"""

import atexit
import importlib
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

import grpc
from grpc_tools import protoc

# The repository's proto/ directory, two levels above deploy/examples/<example>/.
PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "proto")
)

# The public APIs only; the node API (node.proto) is for data-plane nodes.
PUBLIC_PROTOS = ["common", "authentication", "session", "personal"]


def load(proto_root=PROTO_ROOT):
    """Generates and imports the stubs; returns them as `api.<name>_pb2` and `api.<name>_pb2_grpc`."""
    out = tempfile.mkdtemp(prefix="gatehouse-grpc-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = [os.path.join(proto_root, "gatehouse", "v1", f"{name}.proto") for name in PUBLIC_PROTOS]
    status = protoc.main(
        ["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {proto_root}")
    # The generated modules import each other as `gatehouse.v1.<name>_pb2`.
    sys.path.insert(0, out)
    modules = {}
    for name in PUBLIC_PROTOS:
        modules[f"{name}_pb2"] = importlib.import_module(f"gatehouse.v1.{name}_pb2")
        if name != "common":
            modules[f"{name}_pb2_grpc"] = importlib.import_module(f"gatehouse.v1.{name}_pb2_grpc")
    return SimpleNamespace(**modules)


def channel(endpoint, ca=None, cert=None, key=None):
    """A channel to the control plane: plain without `ca`, TLS with it, mutual TLS with `cert` and `key`."""
    if ca is None:
        return grpc.insecure_channel(endpoint)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key) if key else None,
        certificate_chain=read(cert) if cert else None,
    )
    return grpc.secure_channel(endpoint, credentials)


def describe(error):
    """`NOT_FOUND: session not found` for a failed call."""
    return f"{error.code().name}: {error.details()}"
