"""``python -m ctbench``."""

from .cli import main

main()
