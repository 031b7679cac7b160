"""Peer benchmark pieces for scripts/bench_peers.py.

common.py and the *_runner.py modules run as scripts under each engine's own Python (they import
nothing from edgelm except edgelm_runner.py, which runs under the project's venv); texts.py and
report.py are imported by bench_peers.py.
"""
