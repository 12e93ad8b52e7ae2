"""ledger: a small double-entry style bookkeeping API (the second example application)."""
