"""The tools around training: the step, pipeline and kernel benches, the profiler, the static kernel analysis, the
LR finder and the variant chooser. Each writes its own CSV through bench/records/results.py."""
