"""Writers of synthetic datasets into the real datasets' on-disk layouts."""
