"""Prices, cost and (later) balances."""
