"""mlledger reports (built by later issues)."""
