"""Benchmarks for prefill_guard: ``python -m benchmarks [--quick]``.

Everything runs against ``prefill_guard.testing.AnthropicEmulator`` on 127.0.0.1 and depends
only on the standard library and the project's runtime dependencies. See docs/performance.md.
"""
