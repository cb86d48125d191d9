"""``python -m cxr.evaluate``: the command is ``cxr.cli.evaluate``; the library, ``cxr.evaluation``."""

if __name__ == "__main__":
    from cxr.cli.evaluate import main

    raise SystemExit(main())
