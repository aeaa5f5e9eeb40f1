"""Shared machinery of the chaos experiments: metrics scraping, bounded load, the stack, report."""
