"""The ``foundation`` command line (``python -m foundation``, the ``foundation`` script).

Private: the library never imports this package; it sits on the top layer
beside :mod:`foundation.demo`, which it drives (and which never imports it).

Layout: ``_main`` (the top-level parser, ``--version``, dispatch, one-line
errors, the exit status, a closed stdout), ``_options`` (argument types and
option tables), ``_bench_command`` (``bench``'s options and modes) with its
engines ``_bench`` (the backend comparison table), ``_bench_etcd``,
``_bench_scale`` and ``_bench_threads``; ``_demo_command`` (``demo``'s
options, logging and exit status); ``_inspect`` (``inspect``).
"""

from ._main import main as main

__all__ = ["main"]
