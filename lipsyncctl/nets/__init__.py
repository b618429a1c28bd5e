"""Network modules (torch only: no file I/O, no config parsing, no printing)."""
