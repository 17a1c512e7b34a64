"""mlledger: the record."""
