"""The baseline sampler of bench.py (written the way LLaDA's reference generate.py computes), for
the parity tests of sample.generate."""
from bench import baseline_generate as reference_generate  # noqa: F401
