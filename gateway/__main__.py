"""`python -m gateway` is the same as the `liquid-gateway` console script."""

from gateway.cli.app import main

main()
