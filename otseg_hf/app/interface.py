"""A Gradio page around a zero-shot segmentation pipeline: an image (uploaded or picked from the examples),
candidate labels typed as text (any vocabulary), an optional score threshold; out come the overlay with its legend
and each class's share of the image.

This file is also a Space's `app.py` (`otseg-export --space DIR` copies it with `drawing.py` and the model folder):
it imports neither otseg_hf nor anything beside `drawing`, and loads the model with the folder's own code
(`trust_remote_code=True`) where otseg_hf is not installed.

    python app.py [--model FOLDER] [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import PIL.Image

try:  # inside the package (python -m otseg_hf.app)
    from .drawing import class_areas, overlay, segments_to_label_map
except ImportError:  # a Space folder: drawing.py beside app.py
    from drawing import class_areas, overlay, segments_to_label_map

TITLE = "OTSeg: zero-shot semantic segmentation"


def load_segmenter(model: str):
    """The zero-shot pipeline of a model folder (or Hub id): the installed otseg_hf where there is one, else the
    folder's own code."""
    from transformers import pipeline

    try:
        import otseg_hf  # noqa: F401  (registers the classes and the task)

        remote_code = False
    except ImportError:
        remote_code = True
    return pipeline("zero-shot-image-segmentation", model=model, trust_remote_code=remote_code)


def parse_labels(text: str) -> list[str]:
    """Candidate labels typed as text: comma- or newline-separated, blanks dropped."""
    labels = [label.strip() for line in (text or "").splitlines() for label in line.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError("type at least one candidate label, e.g. red circle, blue square")
    return labels


def segment(segmenter, image, labels_text: str, threshold: float = 0.0):
    """(overlay image, rows of [label, share in %]) for one image and the typed labels."""
    if image is None:
        raise ValueError("upload an image or pick an example first")
    labels = parse_labels(labels_text)
    image = image if isinstance(image, PIL.Image.Image) else PIL.Image.fromarray(np.asarray(image))
    image = image.convert("RGB")
    segments = segmenter(image, candidate_labels=labels, threshold=float(threshold) or None)
    label_map = segments_to_label_map(segments, labels, (image.height, image.width))
    areas = [[label, round(100 * share, 1)] for label, share in class_areas(label_map, labels)]
    return overlay(image, label_map, labels), areas


def build_app(segmenter, default_labels: Sequence[str] = (), examples: Sequence[str] = (), title: str = TITLE):
    """The `gradio.Blocks` page; `segmenter` is a zero-shot segmentation pipeline."""
    import gradio as gr

    def run(image, labels_text, threshold):
        try:
            return segment(segmenter, image, labels_text, threshold)
        except ValueError as error:  # a user's mistake: shown in the page, not as a traceback
            raise gr.Error(str(error)) from None

    with gr.Blocks(title=title) as app:
        gr.Markdown(
            f"# {title}\nUpload an image (or pick an example), type the labels to look for, press **Segment**."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="image", sources=["upload", "clipboard"], elem_id="image")
                labels = gr.Textbox(
                    value=", ".join(default_labels),
                    label="candidate labels (comma-separated, any words)",
                    elem_id="labels",
                )
                threshold = gr.Slider(
                    0.0, 1.0, value=0.0, step=0.05, label="leave pixels below this score unlabelled (0: off)"
                )
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column():
                result = gr.Image(type="pil", label="segmentation", elem_id="result", format="png")
                areas = gr.Dataframe(
                    headers=["label", "area (%)"], label="area per class", elem_id="areas", interactive=False
                )
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[image], label="examples")
        button.click(run, inputs=[image, labels, threshold], outputs=[result, areas])
    return app


def parse_args(argv: Sequence[str] | None = None, default_model: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=default_model, help=f"model folder or Hub id (default: {default_model})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), help="port (default: 7860)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":  # a Space folder: the model in ./model, examples in ./examples
    here = os.path.dirname(os.path.abspath(__file__))
    args = parse_args(default_model=os.path.join(here, "model"))
    folder = os.path.join(here, "examples")
    pictures = sorted(os.path.join(folder, name) for name in os.listdir(folder)) if os.path.isdir(folder) else []
    pipe = load_segmenter(args.model)
    build_app(pipe, pipe.model.config.class_names, pictures).launch(server_name=args.host, server_port=args.port)
