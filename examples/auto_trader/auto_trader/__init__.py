"""auto_trader: a small trading service used to exercise dbops.migrations end to end."""
