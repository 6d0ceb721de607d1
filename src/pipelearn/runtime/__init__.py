"""The distributed runtime: a server and devices that execute a schedule over gRPC."""
