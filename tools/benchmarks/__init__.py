"""The benchmarks of the source checkout (not part of the installed kerasrnn package).

Imported as `benchmarks` by tools/bench.py, tools/benchmark_accuracy.py and tools/train_gpu.py
(their folder, tools/, is first on sys.path); they use only public names of kerasrnn.
"""
