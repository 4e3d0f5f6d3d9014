"""Measurements behind scripts/bench.py: training-step time and memory, the fake-quant op, stage and
evaluation throughput. Every ratio is measured inside one process, timings interleaved."""
