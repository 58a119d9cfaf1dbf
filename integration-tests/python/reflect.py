"""Lists a gRPC server's services through server reflection, then checks health.

Usage: reflect.py HOST:PORT
Prints one service name per line, then `health SERVICE STATUS` for each
sluice.v1 service. Uses only the public grpcio packages, as any client would.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = []
        for response in stub.ServerReflectionInfo(iter([request]), timeout=10):
            services.extend(s.name for s in response.list_services_response.service)
        for name in sorted(services):
            print(name)
        health = health_pb2_grpc.HealthStub(channel)
        for name in sorted(services):
            if name.startswith("sluice.v1."):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                print("health", name, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


if __name__ == "__main__":
    main(sys.argv[1])
