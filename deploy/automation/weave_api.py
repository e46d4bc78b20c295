#!/usr/bin/env python3
"""Drive weave's gRPC API from Python with nothing but grpcio and server
reflection: no generated stubs, no .proto files to copy.

    python3 weave_api.py --cert coordinator.crt --admin-file admin.credential \
        [--address host:6783] subnet-add 10.2.3.0/24
    python3 weave_api.py ... subnet-ls

Trust: the coordinator's self-signed certificate (`<data-dir>/tls/coordinator.crt`)
is the only root, and the name checked is `weave-coordinator` (the name in that
certificate), whatever address you dial. Authentication: the metadata
`authorization: Bearer <secret>` on every call (reflection too, which the
coordinator answers only for the admin), where <secret> is the last
dot-separated part of the `wva1.…` admin credential.
"""
import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVER_NAME = "weave-coordinator"


def parse_credential(text):
    """`wva1.<address>.<pin>.<secret>`: address and pin are base64url, the secret is the bearer."""
    import base64

    parts = text.strip().split(".")
    if len(parts) != 4 or parts[0] != "wva1" or not parts[3]:
        raise ValueError("not a wva1. admin credential (wva1.<address>.<pin>.<secret>)")
    try:
        address = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
    except ValueError as e:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError(f"not a wva1. admin credential: its address part does not decode ({e})") from None
    return address, parts[3]


class Weave:
    def __init__(self, address, cert_pem, secret):
        # The credential rides on the channel: every call sends it, reflection's
        # included (the coordinator answers reflection only for the admin).
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=cert_pem),
            grpc.access_token_call_credentials(secret),
        )
        self.channel = grpc.secure_channel(
            address, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
        )
        # Server reflection (v1alpha, what grpcio-reflection speaks) describes every service.
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))

    def call(self, service, method, **fields):
        """Calls weave.v1.<service>/<method> with the request fields given; returns a dict."""
        svc = self.pool.FindServiceByName(f"weave.v1.{service}")
        m = svc.FindMethodByName(method)
        request_cls = message_factory.GetMessageClass(m.input_type)
        response_cls = message_factory.GetMessageClass(m.output_type)
        stub = self.channel.unary_unary(
            f"/{svc.full_name}/{m.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        response = stub(request_cls(**fields), timeout=10)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cert", required=True, help="the coordinator's certificate (PEM)")
    p.add_argument("--admin-file", required=True, help="a file holding the wva1. admin credential")
    p.add_argument("--address", help="host:port (default: the one in the credential)")
    p.add_argument("command", choices=["subnet-add", "subnet-ls", "status"])
    p.add_argument("cidr", nargs="?")
    a = p.parse_args()
    try:
        address, secret = parse_credential(open(a.admin_file).read())
    except (OSError, ValueError) as e:
        # One line and exit 2 (a usage error, as weavectl's), not a traceback
        # (found by a review, 2026-12-07).
        print(f"{a.admin_file}: {e}", file=sys.stderr)
        return 2
    api = Weave(a.address or address, open(a.cert, "rb").read(), secret)
    try:
        if a.command == "subnet-add":
            out = api.call("SubnetService", "AddSubnet", cidr=a.cidr)
        elif a.command == "subnet-ls":
            out = api.call("SubnetService", "ListSubnets")
        else:
            out = api.call("StatusService", "GetStatus")
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
