"""``python -m cxr.loadtest``: the command is ``cxr.cli.loadtest``."""

if __name__ == "__main__":
    from cxr.cli.loadtest import main

    raise SystemExit(main())
