"""nfzoo's benchmarks, run by ``tools/bench.py``: every speed figure nfzoo states comes from
here, as medians of repeated, interleaved measurements taken in one run.

    timing      the one timing mechanism (``interleaved``), rate statistics, thread counts,
                and the runners it times (one per framework's training loop)
    peers       the systems compared: nfzoo's flows and TFP's, zuko's and BayesFlow's
    tables      the one writer of results (JSON and Markdown, atomically) and cell formats
    cli         the command line: one module per subcommand, each with ``COMMAND``, ``HELP``,
                ``add_arguments(parser)`` and ``run(args, meta)``

Nothing is imported here: ``bayesflow_worker`` runs as a module of this package in an
interpreter that has neither nfzoo nor its dependencies.
"""
