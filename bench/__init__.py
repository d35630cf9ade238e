"""The harness: config, the one training loop, timer, results writer, race, leaderboard, CLI."""
