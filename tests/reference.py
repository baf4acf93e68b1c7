"""The baseline sampler of bench.py (written the way LLaDA's reference generate.py computes), for
the parity tests of sample.generate and sample.fast_generate. It lives in bench.py, which measures
our sampler against it; it shares no code with sample.py."""
from bench import baseline_generate as reference_generate  # noqa: F401
