"""``python -m featx.cli`` runs the ``featx`` command."""
from featx.cli.main import main

main(prog_name="featx")
