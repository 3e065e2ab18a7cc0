"""Hand references shared by the OTSeg and ZegOT pipeline tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
PENALTY = 0.3  # larger than the defaults, so that the calibration visibly changes the tiny models' output


def upsampled_probabilities(model, image: np.ndarray, **forward_kwargs) -> torch.Tensor:
    """(K, H, W) sigmoid of the model's logits upsampled to an image the size of one window, computed by hand."""
    pixel_values = torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        logits = model(pixel_values, **forward_kwargs).logits
    return F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False).sigmoid()[0]


def calibrated_argmax(probabilities: torch.Tensor, seen: list[int]) -> np.ndarray:
    probabilities = probabilities.clone()
    probabilities[seen] -= PENALTY
    return probabilities.argmax(0).numpy()


def label_map(segments: list[dict], labels: list[str]) -> np.ndarray:
    """The pipeline's binary masks as one map of indices into `labels`; checks they tile the image."""
    result = np.full(np.asarray(segments[0]["mask"]).shape, -1)
    for segment in segments:
        assert set(segment) == {"score", "label", "mask"} and segment["mask"].mode == "L"
        mask = np.asarray(segment["mask"])
        assert set(np.unique(mask)) <= {0, 255}
        assert (result[mask > 0] == -1).all(), "masks overlap"
        result[mask > 0] = labels.index(segment["label"])
    assert (result >= 0).all(), "masks do not cover the image"
    return result


def summary(segments: list[dict]) -> list[dict]:
    """Labels, scores and mask hashes: comparable across processes."""
    return [
        {
            "label": s["label"],
            "score": s["score"],
            "mask": hashlib.sha1(np.asarray(s["mask"]).tobytes()).hexdigest(),
        }
        for s in segments
    ]


# A fresh interpreter where otseg_hf cannot be imported: the plain pipelines are refused, the folder's own code
# (trust_remote_code=True) serves both pipelines and AutoModelForSemanticSegmentation.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import hashlib, importlib.abc, json, sys

    class BlockOTSeg(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "otseg_hf" or name.startswith("otseg_hf."):
                raise ImportError(f"{name} is not importable here")

    sys.meta_path.insert(0, BlockOTSeg())
    import numpy as np
    from transformers import AutoModelForSemanticSegmentation, pipeline

    folder, image_path, out = sys.argv[1:4]

    def summary(segments):
        return [
            {"label": s["label"], "score": s["score"], "mask": hashlib.sha1(np.asarray(s["mask"]).tobytes()).hexdigest()}
            for s in segments
        ]

    refused = {}
    for task in ["image-segmentation", "zero-shot-image-segmentation"]:
        try:
            pipeline(task, model=folder)
            refused[task] = None
        except ValueError as error:
            refused[task] = str(error)
    seg = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    zs = pipeline("zero-shot-image-segmentation", model=folder, trust_remote_code=True)
    auto = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
    result = {
        "refused": refused,
        "image-segmentation": summary(seg(image_path)),
        "zero-shot": summary(zs(image_path, candidate_labels=["cat", "red circle"])),
        "classes": [type(seg.model).__name__, type(auto).__name__],
        "trainable": sorted(n for n, p in auto.named_parameters() if p.requires_grad),
        "modules": [type(seg).__module__, type(zs).__module__, type(seg.model).__module__, type(auto).__module__,
                    type(seg.image_processor).__module__, type(zs.processor).__module__],
        "custom_pipelines": sorted(seg.model.config.custom_pipelines),
        "otseg_hf_imported": any(name.split(".")[0] == "otseg_hf" for name in sys.modules),
    }
    json.dump(result, open(out, "w"))
    """
)


def run_without_otseg_hf(folder, tmp_path) -> dict:
    """Runs REMOTE_SCRIPT on `folder` and a random image; checks what every model's folder must give and returns
    the script's results, with the plain pipelines' results here (where otseg_hf is imported) under "installed"."""
    from transformers import pipeline

    image_path = tmp_path / "image.png"
    PIL.Image.fromarray(np.random.default_rng(3).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)).save(
        image_path
    )
    script, out = tmp_path / "remote.py", tmp_path / "out.json"
    script.write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(image_path), str(out)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,  # transformers' question "run the custom code?" gets no answer: refused
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert not remote["otseg_hf_imported"]
    assert all("trust_remote_code=True" in message for message in remote["refused"].values()), remote[
        "refused"
    ]
    assert all(module.startswith("transformers_modules.") for module in remote["modules"])
    assert remote["custom_pipelines"] == ["image-segmentation", "zero-shot-image-segmentation"]

    installed_seg = pipeline("image-segmentation", model=str(folder))
    installed_zs = pipeline("zero-shot-image-segmentation", model=str(folder))
    assert type(installed_seg).__module__ == type(installed_zs).__module__ == "otseg_hf.model.pipeline_otseg"
    for key, expected in [
        ("image-segmentation", summary(installed_seg(str(image_path)))),
        ("zero-shot", summary(installed_zs(str(image_path), candidate_labels=["cat", "red circle"]))),
    ]:
        assert remote[key] == expected, key  # the same code on the same weights: equal to the last bit
    return remote
