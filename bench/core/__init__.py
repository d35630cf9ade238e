"""The training core: the config tree, recipes, variants and profiles, the machine's facts, the loop (`fit`), the step,
its optimizers (Muon, the weight EMA), the timer and the progress line. It imports nothing from bench's records,
tools or commands, and writes no file: what a run records is bench/run.py's."""
