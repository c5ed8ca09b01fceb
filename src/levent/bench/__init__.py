"""levent's benchmark suite: ``python -m levent bench`` (alias ``levent-bench``).

TCP echo servers on 127.0.0.1 under a C load generator, and timer/callback workloads, for levent and
the loops people compare it with (C libevent, stdlib asyncio, uvloop, a pure-Python selectors loop).
"""
