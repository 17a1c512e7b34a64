"""mlledger policies (built by later issues)."""
