"""mlledger backends (built by later issues)."""
