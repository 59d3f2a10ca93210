"""SAEDashboard 0.8 timed on the same tokens, LM and SAE as bench/analysis.py, in a virtual environment of its own.

SAEDashboard needs transformers < 4.57, transformer-lens 2 and sae-lens 6, which the project's venv cannot hold, so
it gets bench/saedashboard/.venv (git-ignored, ~2 GB, about 2 minutes to build; skipped when already built):

    bash bench/saedashboard/setup.sh                                   # --force rebuilds
    .venv/bin/python bench/saedashboard/compare.py                     # the project's venv: same rows as analysis.py
    bench/saedashboard/.venv/bin/python bench/saedashboard/run.py      # or its own venv alone, reading the run folder

Both print one JSON line: seconds and cpu_seconds of `SaeVisRunner.run` on every feature (loading not timed),
peak_rss_gib of that process, tokens, features. The run folder (default runs/bench-analysis) is the one
bench/analysis.py sets up; run that first. From bench/analysis.py (bench/ is on sys.path when it runs):

    from saedashboard import measure_saedashboard
    r = measure_saedashboard(run, n_tokens, sae_name, threads)  # None when the venv is not built
"""

from .compare import measure_saedashboard

__all__ = ["measure_saedashboard"]
