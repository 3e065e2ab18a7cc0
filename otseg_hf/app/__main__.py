"""`python -m otseg_hf.app [--model FOLDER] [--host 127.0.0.1] [--port 7860]`: the demo app in a browser.

Without --model it serves the shipped world model (offline), with a few generated world images to pick from.
Needs Gradio: `pip install -e ".[app]"`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

# only what `--help` and usage errors need: torch and transformers are imported after the arguments are parsed
from ..cli.choices import WORLD_OTSEG_DIR
from ..cli.conventions import model_source, quiet_libraries, run_cli
from .interface import build_app, load_segmenter, parse_args

EXAMPLE_SCALE = 4  # the world's 64-pixel images, upscaled (nearest) to be seen in a page


def world_examples(folder: Path, count: int = 4) -> list[str]:
    """PNGs of generated world images that show unseen classes (not trained on, not in the metric table)."""
    import numpy as np
    import PIL.Image

    from ..world.demo import images_with_unseen_classes

    paths = []
    for index, (image, _) in enumerate(images_with_unseen_classes(count)):
        picture = PIL.Image.fromarray(np.asarray(image, dtype=np.uint8))
        picture = picture.resize((picture.width * EXAMPLE_SCALE, picture.height * EXAMPLE_SCALE), PIL.Image.NEAREST)
        path = folder / f"world_{index}.png"
        picture.save(path)
        paths.append(str(path))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, default_model=str(WORLD_OTSEG_DIR))
    quiet_libraries()
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError('the app needs Gradio: pip install -e ".[app]" (or pip install gradio)') from error
    segmenter = load_segmenter(model_source(args.model, "--model"))
    examples = []
    if Path(args.model).resolve() == WORLD_OTSEG_DIR.resolve():
        examples = world_examples(Path(tempfile.mkdtemp(prefix="otseg-app-")))
    app = build_app(segmenter, segmenter.model.config.class_names, examples)
    app.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    run_cli(main, "python -m otseg_hf.app")
