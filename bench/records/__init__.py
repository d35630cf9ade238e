"""The records: the results writer and the CSV columns, row labels, statistics, the step log and TensorBoard events,
the per-run report and the leaderboard. They read the core's config and machine facts, never the loop."""
