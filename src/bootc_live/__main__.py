"""`python -m bootc_live` runs the host command line."""

from bootc_live.cli import program

program()
