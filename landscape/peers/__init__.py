"""Adapters to the peer tools the toolkit is compared with (see BENCHMARKS.md)."""
