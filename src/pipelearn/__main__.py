"""`python -m pipelearn` runs the command line."""

from pipelearn.cli import main

raise SystemExit(main())
