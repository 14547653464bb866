"""A stand-in for a latency runtime in tests: a part's "latency" is its parameter count in thousands
(fast and deterministic; larger candidates cost more, as on a real runtime)."""

from __future__ import annotations


class FakeTimer:
    runtime = "onnxruntime-cpu"
    threads = 1

    def __call__(self, module, shape):
        return sum(p.numel() for p in module.parameters()) / 1000 + 0.001

    def time_all(self, parts, progress=None):
        out = []
        for module, shape in parts:
            out.append(self(module, shape))
            if progress:
                progress()
        return out

    def settings(self):
        return {"runtime": self.runtime, "threads": 1, "warmup": 0, "iters": 1, "exporter": "torchscript"}
