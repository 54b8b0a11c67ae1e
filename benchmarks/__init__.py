"""The performance suite of issue 12: `python -m benchmarks` (see README "Performance").

Not installed and not run by CI (a smoke run of `--quick` is in the test suite). It starts its own
redis-server and HTTPS git server (from `tests.support`) and prints one table of figures with
ratios against baselines measured in the same run, interleaved round by round.
"""
