"""The example X-rays shipped beside the app (no heavy imports: HTTP clients use them too)."""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def bundled_examples(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """``examples/<class>_<source>.jpeg``, sorted: three normal, three pneumonia (Kermany 2018, CC BY 4.0)."""
    return sorted(folder.glob("*.jpeg"))


def example_label(path: str | Path) -> str:
    """The caption of ``examples/<class>_<source>.jpeg``: "Pneumonia · person1946_bacteria_4874 (Kermany 2018)"."""
    kind, _, source = Path(path).stem.partition("_")
    return f"{kind.capitalize()} · {source} (Kermany 2018)"
