"""A gRPC server that answers the User service's ``ListSigningKeys`` with one fresh
Ed25519 key, and nothing else: for tests of what a client does around it."""

from __future__ import annotations

from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from checkout.user.v1 import user_pb2
from saga_kit.access_tokens import ALGORITHM, key_id, public_pem


async def serve_signing_keys(port: int) -> grpc.aio.Server:
    """Started on 127.0.0.1:``port``; the caller stops it."""
    public = Ed25519PrivateKey.generate().public_key()
    key = user_pb2.SigningKey(
        kid=key_id(public), algorithm=ALGORITHM, public_key_pem=public_pem(public)
    )

    async def list_keys(request: Any, context: Any) -> user_pb2.ListSigningKeysResponse:
        return user_pb2.ListSigningKeysResponse(keys=[key])

    handler = grpc.unary_unary_rpc_method_handler(
        list_keys,
        request_deserializer=user_pb2.ListSigningKeysRequest.FromString,
        response_serializer=user_pb2.ListSigningKeysResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "checkout.user.v1.UserService", {"ListSigningKeys": handler}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server
