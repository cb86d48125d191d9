"""Gradio Space: probability of pneumonia and a Grad-CAM overlay for a chest X-ray (UI only)."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from PIL import Image

from cxr import ImageReadError, Predictor, read_xray, resolve_weights

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpeg"))
predictor = Predictor.from_folder(resolve_weights())
NOTICE = (
    "**Research demo, not a diagnostic device.** Trained on pediatric chest X-rays (ages 1-5) from one "
    "hospital; it has not been validated for clinical use. Uploads are analysed in memory and not kept."
)


def predict(upload: dict | str | None) -> tuple[dict[str, float], Image.Image]:
    """Chest X-ray file → ({PNEUMONIA: p, NORMAL: 1 - p}, Grad-CAM overlay).

    Runs with ``preprocess=False``: Gradio checks and caches the upload but does not decode it,
    so every file, readable or not, reaches ``cxr.io`` and bad ones get its clear message.
    """
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not path:
        raise gr.Error("Upload a chest X-ray image first.")
    try:
        image = read_xray(path)
    except ImageReadError as error:
        raise gr.Error(str(error)) from error
    prediction, overlay = predictor.explain(image)
    return prediction.confidences(), overlay


def decision(confidences: dict[str, float] | None) -> str:
    """The screening decision shown under the probabilities."""
    if not confidences:
        return ""
    p = confidences["PNEUMONIA"]
    return (
        f"### Decision: {predictor.decide(p)}\n"
        f"P(pneumonia) = {p:.3f}; the model's screening threshold is {predictor.config.threshold:.3f}."
    )


# Uploads and overlays live in Gradio's cache only briefly: swept every 10 minutes once 10 minutes old.
# No analytics, no run history: the app keeps nothing about its users.
with gr.Blocks(title="Pneumonia screening on chest X-rays", delete_cache=(600, 600), analytics_enabled=False) as demo:
    gr.Markdown("# Pneumonia screening on chest X-rays\n" + NOTICE)
    with gr.Row():
        with gr.Column():
            image = gr.Image(
                type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Chest X-ray (drag and drop)"
            )
            analyze = gr.Button("Analyze", variant="primary")
        with gr.Column():
            label = gr.Label(label="Probability", show_heading=False)
            verdict = gr.Markdown()
            cam = gr.Image(type="pil", format="png", label="Grad-CAM: where the model looked")
    analyze.click(predict, image, [label, cam], api_name="predict", preprocess=False).success(
        decision, label, verdict, api_visibility="private"
    )
    # A new image clears the previous answer, so no result stands beside the wrong X-ray.
    image.change(lambda: (None, None, ""), None, [label, cam, verdict], api_visibility="private")
    if EXAMPLES:
        gr.Examples(EXAMPLES, inputs=image, label="Example X-rays (Kermany et al. 2018, CC BY 4.0)")
    gr.Markdown(
        f"Model: `{predictor.config.architecture}`, validation AUC "
        f"{predictor.config.val_metrics.get('auc', float('nan')):.3f} on a patient-grouped split. "
        "See the model card in `weights/` for data, metrics and limits."
    )

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=1).launch(max_file_size="50mb", run_history=False)
