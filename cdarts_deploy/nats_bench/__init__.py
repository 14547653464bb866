"""NATS-Bench topology benchmark (the NAS-Bench-201 space), read safely and one architecture at a time.

* ``safe_pickle`` -- bz2-compressed pickles within size bounds, through an unpickler that builds only
  the few classes the benchmark files name (pure Python stand-ins for the numpy ones);
* ``reader`` -- the "simple" layout (``meta.pickle.pbz2`` + ``NNNNNN.pickle.pbz2``): architecture strings,
  indices and the accuracies of one record.

Pure Python (no numpy, no torch): the format floor.
"""

from cdarts_deploy.nats_bench.reader import DATASETS, Accuracy, Benchmark, BenchmarkError, open_benchmark

__all__ = ["DATASETS", "Accuracy", "Benchmark", "BenchmarkError", "open_benchmark"]
