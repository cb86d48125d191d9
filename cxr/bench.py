"""``python -m cxr.bench``: the command is ``cxr.cli.bench``."""

if __name__ == "__main__":
    from cxr.cli.bench import main

    raise SystemExit(main())
