"""`python -m mrl.cli` = the `mrl` command (bench/load.py starts servers this way, with this interpreter)."""

from mrl.cli import app

app(prog_name="mrl")
