"""``python -m landscape`` runs the command line (also under ``torchrun``)."""

from landscape.cli import main

main(prog_name="landscape")
