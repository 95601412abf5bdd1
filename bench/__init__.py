"""Benchmarks for Carryover: ingest throughput, ack latency, webhook → note latency."""
