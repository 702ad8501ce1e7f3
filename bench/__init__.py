"""Nexus' benchmarks: one package, one runner, one harness.

    python -m bench                    lists the benchmarks
    python -m bench <name> [options]   runs one (``--help`` for its options)

The benchmarks (``__main__.BENCHMARKS``), each a module with ``main(argv, prog=...)``:
``transformer``, ``router``, ``costs``, ``limiter-redis``, ``resp``, ``vllm``, ``chaos``.

What they share: ``harness`` (a run's directory and key, wrk targets in rounds, streams
timed, raw results and README sections written), ``processes`` (children on free ports,
always stopped), ``servers`` (how each measured server starts), ``load`` (wrk cells),
``ttfb`` (time to first chunk) and ``report`` (medians, ratios, verdicts, the README
writer). The servers the harness starts as processes of their own are modules here too,
run as ``python -m bench.<module>``: ``fast_upstream``, ``passthrough`` (with its lean
client ``raw_http``), ``kserve_passthrough`` and ``ablated_transformer``.

Run from the repository's root with ``nexus`` importable (``make bench`` does).
"""
