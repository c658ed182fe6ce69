"""capture: the library."""
