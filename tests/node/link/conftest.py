"""The link's workers against a real clearinghouse: the federation tests' city (a real
clearinghouse gRPC server on 127.0.0.1 and three nodes with their real links)."""

from tests.federation.conftest import city  # noqa: F401 - the fixture, shared
