"""`python -m fp8port`: the same as the `fp8port` console script."""

from .cli.main import main

if __name__ == "__main__":  # spawned worker processes import this module too
    raise SystemExit(main())
