"""`python -m fp8port`: the same as the `fp8port` console script."""

from .cli.main import main

raise SystemExit(main())
