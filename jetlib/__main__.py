"""``python -m jetlib <step>``: the form ``torchrun -m jetlib`` needs."""

from jetlib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
