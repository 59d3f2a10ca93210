"""`python -m app.cli`: the same as the `monoscope` command."""

from app.cli import main

main()
