"""``python -m pneumo``: the same command line as ``pneumo``."""

from pneumo.cli import main

main()
