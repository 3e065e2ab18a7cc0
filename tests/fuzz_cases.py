"""Bad and edge-case inputs for every public entry point, and how to judge what came back.

Each `Case` runs one input through one surface and says what is acceptable:
- expect "error": a documented error (ValueError / TypeError / FileNotFoundError subclasses, or a CLI's
  SystemExit with a message) raised by otseg_hf, training/ or argparse; anything returned is garbage.
- expect "result": a result that passes the case's `check` (finite, right shape, equal to the sanitised input's
  result where there is one); an error counts as a refusal of valid input ("deep" if not ours).
- expect "either": a documented error or a result that passes `check`.

Outcomes (`judge`): "clear" (documented error), "handled" (good result), "garbage" (a result that is wrong, or
one where an error was due), "deep" (any other exception, or a documented type raised deep inside a library).
`tests/fuzz_report.py` counts them per surface; tests/test_fuzz_*.py assert that none is garbage or deep.
Everything runs offline on a tiny model (a few seconds in all for a surface).
"""

from __future__ import annotations

import json
import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLASS_NAMES = ["red circle", "blue square", "green triangle", "yellow star", "striped square"]
TINY_OVERRIDES = dict(
    num_visual_prompts=3,
    visual_prompt_depth=2,
    decoder_ffn_dim=32,
    inference_window_size=32,
    inference_window_stride=24,
)
DOCUMENTED = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
OURS = (f"{os.sep}otseg_hf{os.sep}", f"{os.sep}training{os.sep}", "argparse.py")


@dataclass
class Case:
    surface: str
    name: str
    run: Callable[[], Any]
    expect: str = "error"  # "error" | "result" | "either"
    check: Callable[[Any], bool] | None = None
    library_ok: bool = False  # a library's own error is clear enough here (it names the file and the problem)


def raised_by_us(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in OURS)


def judge(case: Case) -> tuple[str, str]:
    """(outcome, detail) of running `case`."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = case.run()
    except SystemExit as error:
        message = str(error.code) if error.code not in (None, 0) else ""
        if error.code in (None, 0):
            return ("garbage", "exit 0") if case.expect == "error" else ("handled", "exit 0")
        return ("clear", message[:200]) if case.expect != "result" else ("deep", f"refused: {message[:200]}")
    except DOCUMENTED as error:
        detail = f"{type(error).__name__}: {error}"[:300]
        if (not raised_by_us(error) and not case.library_ok) or not str(error):
            return "deep", "(library) " + detail
        return ("clear", detail) if case.expect != "result" else ("deep", "refused valid input: " + detail)
    except Exception as error:  # noqa: BLE001
        if case.library_ok and isinstance(error, OSError) and str(error) and case.expect != "result":
            return "clear", f"(library) {type(error).__name__}: {error}"[:300]
        return "deep", f"{type(error).__name__}: {error}"[:300]
    if case.expect == "error":
        warned = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        return "garbage", f"returned {summary(result)}" + (f" (warned: {warned[0][:80]})" if warned else "")
    ok = case.check(result) if case.check else True
    return ("handled", "") if ok else ("garbage", f"bad result {summary(result)}")


def summary(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} finite={bool(torch.isfinite(value.float()).all())}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {summary(v)}" for k, v in list(value.items())[:3]) + "}"
    if isinstance(value, list):
        return f"list[{len(value)}]"
    return type(value).__name__


def finite(*tensors) -> bool:
    return all(torch.isfinite(torch.as_tensor(t).float()).all() for t in tensors)


# ------------------------------------------------------------------------------------------------------------
# the tiny world every case runs on
# ------------------------------------------------------------------------------------------------------------
class World:
    """A tiny OTSeg (and its folder, tokenizer, CLIP folder) built once, in `tmp`."""

    def __init__(self, tmp: Path):
        from transformers import CLIPModel

        from otseg_hf import OTSegForSemanticSegmentation
        from otseg_hf.hub.folders import save_otseg_folder
        from otseg_hf.testing import char_clip_tokenizer, tiny_clip_config

        self.tmp = Path(tmp)
        torch.manual_seed(0)
        self.tokenizer = char_clip_tokenizer()
        self.clip_dir = self.tmp / "clip"
        CLIPModel(tiny_clip_config(image_size=32, patch_size=8)).save_pretrained(self.clip_dir)
        self.tokenizer.save_pretrained(self.clip_dir)
        self.model = OTSegForSemanticSegmentation.from_clip(
            self.clip_dir, CLASS_NAMES, seen_label_ids=[0, 1, 2], image_size=32, **TINY_OVERRIDES
        ).eval()
        self.folder = self.tmp / "model"
        save_otseg_folder(self.model, self.folder, tokenizer=self.tokenizer)
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.tmp / f"{name}-{self.count}"
        return path

    def copy_folder(self) -> Path:
        import shutil

        path = self.fresh("folder")
        shutil.copytree(self.folder, path)
        return path

    def image_processor(self):
        from otseg_hf import OTSegImageProcessor

        return OTSegImageProcessor.from_pretrained(self.folder)

    def pipeline(self, zero_shot: bool = False):
        from transformers import pipeline

        import otseg_hf  # noqa: F401

        task = "zero-shot-image-segmentation" if zero_shot else "image-segmentation"
        return pipeline(task, model=str(self.folder))


# ------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------
def image_arrays() -> list[tuple[str, Any, str]]:
    """(name, image, expect) for arrays, tensors and PIL images of every mode, dtype, shape and range."""
    import PIL.Image

    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    cases = [("uint8 rgb", rgb8, "result")]
    for mode in ("RGB", "RGBA", "L", "P", "LA", "I;16", "I", "F", "1", "CMYK", "YCbCr"):
        cases.append((f"PIL {mode}", PIL.Image.fromarray(rgb8).convert(mode), "either"))
    for h, w in ((1, 1), (1, 300), (300, 1), (7, 9), (33, 65)):
        cases.append((f"size {h}x{w}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "either"))
    cases += [
        ("empty 0x0", np.zeros((0, 0, 3), np.uint8), "error"),
        ("empty 0x10", np.zeros((0, 10, 3), np.uint8), "error"),
        ("2 channels", rgb8[..., :2], "error"),
        ("5 channels", np.concatenate([rgb8, rgb8[..., :2]], -1), "error"),
        ("4-d array", rgb8[None], "either"),
        ("1-d array", rgb8.reshape(-1), "error"),
        ("grey 2-d", rgb8[..., 0], "either"),
        ("(H, W, 1)", rgb8[..., :1], "either"),
        ("(H, W, 4)", np.concatenate([rgb8, rgb8[..., :1]], -1), "either"),
        ("channels first uint8", rgb8.transpose(2, 0, 1).copy(), "either"),
        ("uint16", rgb8.astype(np.uint16) * 257, "either"),
        ("int64 0..255", rgb8.astype(np.int64), "either"),
        ("int64 negative", rgb8.astype(np.int64) - 300, "error"),
        ("bool", rgb8 > 128, "either"),
        ("float16 0..255", rgb8.astype(np.float16), "either"),
        ("float64 0..255", rgb8.astype(np.float64), "either"),
        ("float32 0..1", rgb8.astype(np.float32) / 255, "scaled"),
        ("float64 0..1", rgb8.astype(np.float64) / 255, "scaled"),
        ("torch float 0..1", torch.from_numpy(rgb8.transpose(2, 0, 1).astype(np.float32) / 255), "scaled"),
        ("torch uint8 chw", torch.from_numpy(rgb8.transpose(2, 0, 1).copy()), "either"),
        ("float32 nan pixel", _with(rgb8.astype(np.float32), np.nan), "error"),
        ("float32 inf pixel", _with(rgb8.astype(np.float32), np.inf), "error"),
        ("float32 -inf pixel", _with(rgb8.astype(np.float32), -np.inf), "error"),
        ("torch nan pixel", torch.from_numpy(_with(rgb8.astype(np.float32), np.nan).transpose(2, 0, 1).copy()),
         "error"),
        ("float32 1e30", _with(rgb8.astype(np.float32), 1e30), "error"),
        ("complex", rgb8.astype(np.complex64), "error"),
        ("object array", np.array([[None]], dtype=object), "error"),
        ("string", "not an image path", "error"),
        ("None", None, "error"),
        ("int", 3, "error"),
        ("nested list", rgb8.tolist(), "either"),
    ]  # fmt: skip
    return cases


def _with(array: np.ndarray, value) -> np.ndarray:
    array = array.copy()
    array[3, 4, 1] = value
    return array


def pixel_values_ok(result, height=None) -> bool:
    values = result["pixel_values"]
    values = torch.as_tensor(np.asarray(values)) if not isinstance(values, torch.Tensor) else values
    return values.dim() == 4 and values.shape[1] == 3 and finite(values)


# ------------------------------------------------------------------------------------------------------------
# cases per surface
# ------------------------------------------------------------------------------------------------------------
def image_processor_cases(world: World) -> list[Case]:
    processor = world.image_processor()
    reference = processor(images=image_arrays()[0][1], return_tensors="pt")["pixel_values"]
    cases = []
    for name, image, expect in image_arrays():
        if expect == "scaled":  # float 0..1: the same pixels as the uint8 image (rescaled once), or a warning
            cases.append(Case("image processor", name, _run_scaled(processor, image, reference), "result"))
            continue
        cases.append(
            Case("image processor", name, lambda image=image: processor(images=image, return_tensors="pt"),
                 expect, pixel_values_ok)
        )  # fmt: skip
    library_ok = {"size height only", "return_tensors bogus"}  # transformers' messages name the value and choices
    for name, kwargs, expect in [
        ("size shortest_edge 0", {"size": {"shortest_edge": 0}}, "error"),
        ("size negative", {"size": {"shortest_edge": -5}}, "error"),
        ("size height only", {"size": {"height": 32}}, "error"),  # transformers' own message is clear
        ("rescale_factor nan", {"rescale_factor": float("nan")}, "error"),
        ("image_mean nan", {"image_mean": [float("nan")] * 3}, "error"),
        ("image_std 0", {"image_std": [0.0, 1.0, 1.0]}, "error"),
        ("size_divisor 0", {"size_divisor": 0}, "either"),
        ("return_tensors bogus", {"return_tensors": "bogus"}, "error"),
    ]:
        cases.append(
            Case("image processor", name,
                 lambda kwargs=kwargs: processor(images=image_arrays()[0][1], return_tensors="pt", **kwargs),
                 expect, pixel_values_ok, library_ok=name in library_ok)
        )  # fmt: skip
    labels = np.zeros((40, 48), np.uint8)
    for name, label, expect in [
        ("label ok", labels, "result"),
        ("label wrong size", np.zeros((10, 10), np.uint8), "error"),
        ("label float", labels.astype(np.float32) + 0.5, "error"),
        ("label 3-d", np.zeros((40, 48, 3), np.uint8), "error"),
        ("label negative", labels.astype(np.int64) - 1, "either"),
    ]:
        cases.append(
            Case("image processor", name,
                 lambda label=label: processor(images=image_arrays()[0][1], segmentation_maps=label,
                                               return_tensors="pt"), expect, pixel_values_ok)
        )  # fmt: skip
    # post-processing
    probs = torch.rand(1, 5, 8, 8)
    for name, kwargs, expect in [
        ("post nan logits", {"logits": torch.full((1, 5, 8, 8), float("nan"))}, "error"),
        ("post seen penalty nan", {"seen_class_penalty": float("nan"), "seen_label_ids": [0]}, "error"),
        ("post target 0x0", {"target_sizes": [(0, 0)]}, "error"),
        ("post target mismatch", {"target_sizes": [(8, 8), (8, 8)]}, "error"),
        ("post seen id 9", {"seen_label_ids": [9], "seen_class_penalty": 0.1}, "error"),
    ]:
        cases.append(Case("image processor", name, _post(processor, probs, kwargs), expect))
    return cases


def _run_scaled(processor, image, reference):
    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = processor(images=image, return_tensors="pt")["pixel_values"]
        if torch.allclose(out, reference, atol=1e-4):
            return True
        logged = getattr(processor, "_last_scaled_warning", False)
        if any("rescale" in str(w.message).lower() or "0..1" in str(w.message) for w in caught) or logged:
            return True
        return False

    def checked():
        if not run():
            raise AssertionError("float image in 0..1 read as 0..255 without a warning (near-black)")
        return {"ok": True}

    return checked


def _post(processor, probs, kwargs):
    def run():
        outputs = {"logits": kwargs.get("logits", probs)}
        extra = {k: v for k, v in kwargs.items() if k != "logits"}
        return processor.post_process_semantic_segmentation(outputs, **extra)

    return run


def config_cases(world: World) -> list[Case]:
    from otseg_hf import OTSegConfig, ZegOTConfig

    base = world.model.config.to_dict()
    bad = [
        ("epsilon nan", {"sinkhorn_epsilon": float("nan")}),
        ("epsilon inf", {"sinkhorn_epsilon": float("inf")}),
        ("epsilon 0", {"sinkhorn_epsilon": 0.0}),
        ("epsilon string", {"sinkhorn_epsilon": "0.05"}),
        ("max_iter 0", {"sinkhorn_max_iter": 0}),
        ("max_iter float", {"sinkhorn_max_iter": 2.5}),
        ("seen penalty nan", {"seen_class_penalty": float("nan")}),
        ("seen penalty string", {"seen_class_penalty": "0.1"}),
        ("transductive 'false'", {"transductive": "false"}),
        ("transductive 1", {"transductive": 1}),
        ("seen ids floats", {"seen_label_ids": [0.9, 1.2]}),
        ("seen ids out of range", {"seen_label_ids": [0, 7]}),
        ("seen ids negative", {"seen_label_ids": [-1, 0]}),
        ("seen ids duplicate", {"seen_label_ids": [0, 0, 1]}),
        ("seen ids string", {"seen_label_ids": "0,1"}),
        ("templates no slot", {"prompt_templates": ["a photo"]}),
        ("templates two slots", {"prompt_templates": ["{0} x {}"]}),
        ("templates named slot", {"prompt_templates": ["a {name}"]}),
        ("templates empty", {"prompt_templates": []}),
        ("templates string", {"prompt_templates": "a {}"}),
        ("window 0", {"inference_window_size": 0}),
        ("stride 0", {"inference_window_stride": 0}),
        ("stride > window", {"inference_window_stride": 64}),
        ("window negative", {"inference_window_size": -32}),
        ("window string", {"inference_window_size": "32"}),
        ("window float", {"inference_window_size": 32.5}),
        ("loss weight nan", {"focal_loss_weight": float("nan")}),
        ("loss weight inf", {"dice_loss_weight": float("inf")}),
        ("loss weight negative", {"dice_loss_weight": -1.0}),
        ("ensemble weight nan", {"ensemble_weight": float("nan")}),
        ("ensemble weight 2", {"ensemble_weight": 2.0}),
        ("ignore_index string", {"ignore_index": "255"}),
        ("num prompts 0", {"num_visual_prompts": 0}),
        ("num prompts negative", {"num_visual_prompts": -1}),
        ("prompt depth too deep", {"visual_prompt_depth": 99}),
        ("decoder ffn 0", {"decoder_ffn_dim": 0}),
        ("matching bogus", {"matching": "bogus"}),
        ("no classes", {"id2label": {}}),
        ("empty class name", {"id2label": {0: "", 1: "b"}}),
        ("duplicate class names", {"id2label": {0: "a", 1: "a"}}),
        ("class name not a string", {"id2label": {0: 5, 1: "b"}}),
    ]
    known = set(base)
    cases = []
    for name, change in bad:
        if not set(change) <= known | {"id2label"}:
            continue  # a field this version does not have
        kwargs = {**base, **change}
        if "id2label" in change:
            kwargs.pop("label2id", None)
            kwargs.pop("num_labels", None)
        kwargs.pop("seen_label_ids", None) if name.startswith("no classes") else None
        cases.append(Case("config", f"constructor: {name}", lambda kwargs=kwargs: OTSegConfig(**kwargs)))
        cases.append(Case("config.json", f"edited: {name}", _edited_config(world, change)))
    cases.append(Case("config", "constructor: unknown field", lambda: OTSegConfig(**base, nosuchfield=1),
                      "either"))  # fmt: skip
    cases.append(Case("config", "zegot epsilon nan", lambda: ZegOTConfig(sinkhorn_epsilon=float("nan"))))
    # transformers' own errors name the file and what is wrong
    cases.append(Case("config.json", "not JSON", _raw_config(world, "{not json"), library_ok=True))
    cases.append(Case("config.json", "a list", _raw_config(world, "[1, 2]"), library_ok=True))
    cases.append(Case("config.json", "NaN literal", _raw_config_edit(world, '"sinkhorn_epsilon": NaN')))
    return cases


def _edited_config(world: World, change: dict):
    def run():
        from transformers import AutoModelForSemanticSegmentation

        folder = world.copy_folder()
        config = json.loads((folder / "config.json").read_text())
        for key, value in change.items():
            config[key] = {str(k): v for k, v in value.items()} if key == "id2label" else value
            if key == "id2label":
                config.pop("label2id", None)
        (folder / "config.json").write_text(json.dumps(config))
        return AutoModelForSemanticSegmentation.from_pretrained(folder)

    return run


def _raw_config(world: World, text: str):
    def run():
        from transformers import AutoModelForSemanticSegmentation

        folder = world.copy_folder()
        (folder / "config.json").write_text(text)
        return AutoModelForSemanticSegmentation.from_pretrained(folder)

    return run


def _raw_config_edit(world: World, entry: str):
    def run():
        from transformers import AutoModelForSemanticSegmentation

        folder = world.copy_folder()
        text = (folder / "config.json").read_text()
        key = entry.split(":")[0]
        start = text.index(key)
        end = min(text.index(",", start), text.index("\n", start))
        (folder / "config.json").write_text(text[:start] + entry + text[end:])
        return AutoModelForSemanticSegmentation.from_pretrained(folder)

    return run


def forward_cases(world: World) -> list[Case]:
    model = world.model
    x = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32))

    def ok(output) -> bool:
        return finite(output.logits) and output.logits.shape[:2] == (x.shape[0], 5)

    def nan_at(tensor, value):
        tensor = tensor.clone()
        tensor.view(-1)[7] = value
        return tensor

    embeds = model.text_embeds if hasattr(model, "text_embeds") else None
    cases = [
        ("ok", lambda: model(pixel_values=x), "result"),
        ("nan pixel", lambda: model(pixel_values=nan_at(x, float("nan"))), "error"),
        ("inf pixel", lambda: model(pixel_values=nan_at(x, float("inf"))), "error"),
        ("batch 0", lambda: model(pixel_values=x[:0]), "error"),
        ("1 channel", lambda: model(pixel_values=x[:, :1]), "error"),
        ("4 channels", lambda: model(pixel_values=torch.cat([x, x[:, :1]], 1)), "error"),
        ("3-d input", lambda: model(pixel_values=x[0]), "error"),
        ("5-d input", lambda: model(pixel_values=x[None]), "error"),
        ("int64 input", lambda: model(pixel_values=x.long()), "error"),
        ("float64 input", lambda: model(pixel_values=x.double()), "either"),
        ("float16 input", lambda: model(pixel_values=x.half()), "either"),
        ("numpy input", lambda: model(pixel_values=x.numpy()), "error"),
        ("not a patch multiple", lambda: model(pixel_values=x[:, :, :30, :30]), "either"),
        ("labels ok", lambda: model(pixel_values=x, labels=labels), "result"),
        ("labels batch mismatch", lambda: model(pixel_values=x, labels=labels[:1]), "error"),
        ("labels id 9", lambda: model(pixel_values=x, labels=torch.full_like(labels, 9)), "error"),
        ("labels negative", lambda: model(pixel_values=x, labels=torch.full_like(labels, -1)), "error"),
        ("labels float", lambda: model(pixel_values=x, labels=labels.float() + 0.5), "error"),
        ("labels 2-d", lambda: model(pixel_values=x, labels=labels[0]), "error"),
        ("text_embeds N=0", lambda: model(pixel_values=x, text_embeds=torch.zeros(5, 0, 16)), "error"),
        ("text_embeds K=0", lambda: model(pixel_values=x, text_embeds=torch.zeros(0, 3, 16)), "error"),
        ("text_embeds wrong D", lambda: model(pixel_values=x, text_embeds=torch.randn(5, 3, 7)), "error"),
        ("text_embeds nan", lambda: model(pixel_values=x, text_embeds=torch.full((5, 3, 16), float("nan"))),
         "error"),
        ("text_embeds 2-d", lambda: model(pixel_values=x, text_embeds=torch.randn(5, 16)), "error"),
    ]  # fmt: skip
    out = []
    for name, run, expect in cases:
        if name.startswith("labels"):
            out.append(Case("forward", name, lambda run=run: _train_mode(model, run), expect,
                            lambda o: finite(o.loss)))  # fmt: skip
        else:
            out.append(Case("forward", name, lambda run=run: _no_grad(run), expect, ok))
    del embeds
    return out


def _no_grad(run):
    with torch.no_grad():
        return run()


def _train_mode(model, run):
    model.train()
    try:
        return run()
    finally:
        model.eval()


def pipeline_cases(world: World) -> list[Case]:
    segmenter = world.pipeline()
    zero_shot = world.pipeline(zero_shot=True)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    import PIL.Image

    image = PIL.Image.fromarray(rgb)

    def ok(result) -> bool:
        return isinstance(result, list) and all(
            np.asarray(r["mask"]).shape == (40, 56) and (r["score"] is None or np.isfinite(r["score"]))
            for r in result
        )

    cases = [
        ("ok", lambda: segmenter(image), "result"),
        ("window 0", lambda: segmenter(image, window_size=0), "error"),
        ("stride 0", lambda: segmenter(image, stride=0), "error"),
        ("stride > window", lambda: segmenter(image, window_size=16, stride=1000), "error"),
        ("window 13 default stride", lambda: segmenter(image, window_size=13), "error"),
        ("window negative", lambda: segmenter(image, window_size=-8), "error"),
        ("window float", lambda: segmenter(image, window_size=16.5), "error"),
        ("window string", lambda: segmenter(image, window_size="16"), "error"),
        ("window batch 0", lambda: segmenter(image, window_batch_size=0), "error"),
        ("window larger than image", lambda: segmenter(image, window_size=512, stride=512), "result"),
        ("batch_size 0", lambda: segmenter([image, image], batch_size=0), "error"),
        ("empty list", lambda: segmenter([]), "either"),
        ("nan image", lambda: segmenter(_with(rgb.astype(np.float32), np.nan)), "error"),
        ("inf image", lambda: segmenter(_with(rgb.astype(np.float32), np.inf)), "error"),
        ("float 0..1 image", _pipeline_scaled(segmenter, rgb), "result"),
        ("missing file", lambda: segmenter("/nonexistent/x.png"), "error"),
        ("not an image file", lambda: segmenter(str(_text_file(world))), "error"),
        ("zero-shot ok", lambda: zero_shot(image, candidate_labels=["cat", "dog"]), "result"),
        ("zero-shot no labels", lambda: zero_shot(image, candidate_labels=[]), "error"),
        ("zero-shot empty label", lambda: zero_shot(image, candidate_labels=["", "dog"]), "error"),
        ("zero-shot duplicate", lambda: zero_shot(image, candidate_labels=["dog", "dog"]), "error"),
        ("zero-shot non-string", lambda: zero_shot(image, candidate_labels=[3, "dog"]), "error"),
        ("zero-shot one label", lambda: zero_shot(image, candidate_labels=["dog"]), "result"),
        ("zero-shot long labels", _long_labels(zero_shot, image), "either"),
        ("zero-shot stride > window", lambda: zero_shot(image, candidate_labels=["a", "b"], window_size=8,
                                                         stride=1000), "error"),
    ]  # fmt: skip
    return [Case("pipelines", name, run, expect, ok) for name, run, expect in cases]


def _long_labels(zero_shot, image):
    def run():
        long = "a very long label that goes on and on " * 4
        result = zero_shot(image, candidate_labels=[long + "cat", long + "dog"])
        return result

    return run


def _pipeline_scaled(segmenter, rgb):
    def run():
        expected = segmenter(rgb)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = segmenter(rgb.astype(np.float32) / 255)
        same = [r["label"] for r in expected] == [r["label"] for r in got] and all(
            np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"])) for a, b in zip(expected, got)
        )
        if not same and not any("0..1" in str(w.message) or "rescale" in str(w.message).lower() for w in caught):
            raise AssertionError("float image in 0..1 segmented as a near-black image, without a warning")
        return got

    return run


def _text_file(world: World) -> Path:
    path = world.fresh("text") .with_suffix(".png")
    path.write_text("this is not a png")
    return path


def processor_cases(world: World) -> list[Case]:
    from otseg_hf import OTSegProcessor

    processor = OTSegProcessor.from_pretrained(world.folder)
    rgb = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)

    def ok(result) -> bool:
        return all(finite(v) for v in result.values() if isinstance(v, torch.Tensor) and v.is_floating_point())

    cases = [
        ("text ok", lambda: processor(text=["cat", "dog"]), "result"),
        ("text empty list", lambda: processor(text=[]), "error"),
        ("text empty string", lambda: processor(text=["", "dog"]), "error"),
        ("text non-string", lambda: processor(text=[1, 2]), "error"),
        ("text duplicate", lambda: processor(text=["a", "a"]), "error"),
        ("text one string", lambda: processor(text="cat"), "result"),
        ("template no slot", lambda: processor(text=["cat"], prompt_templates=["a photo"]), "error"),
        ("template two slots", lambda: processor(text=["cat"], prompt_templates=["{0} x {}"]), "error"),
        ("template empty", lambda: processor(text=["cat"], prompt_templates=[]), "error"),
        ("images and text", lambda: processor(images=rgb, text=["cat"]), "result"),
        ("nothing", lambda: processor(), "error"),
        ("nan image", lambda: processor(images=_with(rgb.astype(np.float32), np.nan)), "error"),
        ("return_tensors bogus", lambda: processor(text=["cat"], return_tensors="bogus"), "error"),
    ]
    library_ok = {"return_tensors bogus"}  # transformers: "bogus is not a valid TensorType, please select one of"
    return [Case("processor", name, run, expect, ok, library_ok=name in library_ok) for name, run, expect in cases]


def folder_cases(world: World) -> list[Case]:
    from safetensors.torch import load_file, save_file

    def edited(edit):
        def run():
            from transformers import AutoModelForSemanticSegmentation

            folder = world.copy_folder()
            edit(folder)
            return AutoModelForSemanticSegmentation.from_pretrained(folder)

        return run

    def drop(prefix):
        def edit(folder):
            state = load_file(folder / "model.safetensors")
            key = next(k for k in state if k.startswith(prefix))
            del state[key]
            save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

        return edit

    def nan_weight(folder):
        state = load_file(folder / "model.safetensors")
        key = next(k for k in state if k.startswith("head.decoder") and state[k].is_floating_point())
        state[key] = torch.full_like(state[key], float("nan"))
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    def truncate(folder):
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])

    def remove(name):
        return lambda folder: (folder / name).unlink()

    def ok(model) -> bool:
        with torch.no_grad():
            logits = model(pixel_values=torch.randn(1, 3, 32, 32)).logits
        with torch.no_grad():
            expected = world.model(pixel_values=torch.randn(1, 3, 32, 32)).logits
        return finite(logits) and logits.shape == expected.shape

    def processor_from(edit, check):
        def run():
            from otseg_hf import OTSegProcessor

            folder = world.copy_folder()
            edit(folder)
            processor = OTSegProcessor.from_pretrained(folder)
            if not check(processor):
                raise AssertionError("the edited file was ignored")
            return processor

        return run

    def edit_preprocessor(folder):
        config = json.loads((folder / "preprocessor_config.json").read_text())
        config["size"] = {"shortest_edge": 48}
        (folder / "preprocessor_config.json").write_text(json.dumps(config))

    def corrupt_tokenizer(folder):
        (folder / "tokenizer.json").write_text("{ corrupt")

    def tokenizer_from(edit):
        """The package's tokenizer loader (the CLIs, evaluate.py and the converter use it); before it existed,
        they caught (OSError, ValueError) and went on without a tokenizer."""

        def run():
            folder = world.copy_folder()
            edit(folder)
            try:
                from otseg_hf.model.processing_otseg import load_tokenizer
            except ImportError:
                from transformers import AutoTokenizer

                try:
                    return AutoTokenizer.from_pretrained(folder)
                except (OSError, ValueError):
                    return None  # "this model has no tokenizer"
            return load_tokenizer(folder)

        return run

    cases = [
        Case("folder loading", "intact", edited(lambda f: None), "result", ok),
        Case("folder loading", "missing head tensor", edited(drop("head.decoder")), "error"),
        Case("folder loading", "missing CLIP tensor", edited(drop("clip.vision_model")), "error"),
        Case("folder loading", "missing prompt tensor", edited(drop("visual_prompts")), "error"),
        Case("folder loading", "NaN weights", edited(nan_weight), "error"),
        Case("folder loading", "truncated weights", edited(truncate), "error"),
        Case("folder loading", "no weights", edited(remove("model.safetensors")), "error", library_ok=True),
        Case("folder loading", "no config", edited(remove("config.json")), "error", library_ok=True),
        Case("folder loading", "bfloat16", _dtype_load(world), "result"),
        Case("folder loading", "edited preprocessor_config.json",
             processor_from(edit_preprocessor, lambda p: p.image_processor.size.get("shortest_edge") == 48),
             "result"),
        Case("folder loading", "corrupt tokenizer.json (processor)", processor_from(corrupt_tokenizer, bool)),
        Case("folder loading", "corrupt tokenizer.json (tokenizer)", tokenizer_from(corrupt_tokenizer)),
    ]  # fmt: skip
    return cases


def _dtype_load(world: World):
    def run():
        from transformers import AutoModelForSemanticSegmentation

        model = AutoModelForSemanticSegmentation.from_pretrained(world.folder, dtype=torch.bfloat16)
        with torch.no_grad():
            return model(pixel_values=torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))

    return run


def cli_cases(world: World) -> list[Case]:
    import PIL.Image

    from otseg_hf.cli.segment import main

    good = world.fresh("image").with_suffix(".png")
    PIL.Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(good)
    broken = _text_file(world)
    out_file = world.fresh("outfile")
    out_file.write_text("x")

    def segment(*argv):
        return lambda: main([*map(str, argv)])

    def continues_past_broken():
        out = world.fresh("out")
        try:
            main([str(broken), str(good), "--model", str(world.folder), "--out", str(out), "--no-progress"])
        except (SystemExit, ValueError, OSError) as error:
            if isinstance(error, SystemExit) and error.code in (None, 0):
                raise
            if not (out / f"{good.stem}_labels.png").exists():
                raise RuntimeError("stopped at the unreadable image; the readable one was skipped") from error
            raise
        raise RuntimeError("an unreadable image was skipped with exit status 0")

    m = ["--model", str(world.folder)]
    cases = [
        ("ok", segment(good, *m, "--out", world.fresh("out")), "result"),
        ("unreadable image among good ones", continues_past_broken, "error"),
        ("missing image", segment("/nonexistent.png", *m, "--out", world.fresh("out")), "error"),
        ("no images", segment(*m, "--out", world.fresh("out")), "error"),
        ("--out is a file", segment(good, *m, "--out", out_file), "error"),
        ("--device cuda:0 (none here)" if not torch.cuda.is_available() else "--device bogus",
         segment(good, *m, "--out", world.fresh("out"), "--device", "cuda:0" if not torch.cuda.is_available()
                 else "bogus"), "error"),
        ("--model missing", segment(good, "--model", world.tmp / "nothing", "--out", world.fresh("out")), "error"),
        ("--model CLIP folder", segment(good, "--model", world.clip_dir, "--out", world.fresh("out")), "error"),
        ("--window-size 0", segment(good, *m, "--out", world.fresh("out"), "--window-size", "0"), "error"),
        ("--stride 0", segment(good, *m, "--out", world.fresh("out"), "--stride", "0"), "error"),
        ("--stride > window", segment(good, *m, "--out", world.fresh("out"), "--window-size", "8", "--stride",
                                      "1000"), "error"),
        ("--alpha nan", segment(good, *m, "--out", world.fresh("out"), "--alpha", "nan"), "error"),
        ("--alpha 2", segment(good, *m, "--out", world.fresh("out"), "--alpha", "2"), "error"),
        ("--longest-edge 0", segment(good, *m, "--out", world.fresh("out"), "--longest-edge", "0"), "error"),
        ("--labels empty string", segment(good, *m, "--out", world.fresh("out"), "--labels", ""), "error"),
    ]  # fmt: skip
    return [Case("otseg-segment", name, run, expect) for name, run, expect in cases]


def converter_cases(world: World) -> list[Case]:
    import sys

    import otseg_hf

    # the fake reference checkpoints of the tests that go with the code under test
    sys.path.insert(0, str(Path(otseg_hf.__file__).parents[1] / "tests"))
    from test_convert_reference_checkpoint import HEAD_DIM, build_reference_state_dict, random_text_embeds

    try:
        from otseg_hf.cli.convert import main
    except ImportError:  # before the converter's command line moved to otseg_hf.cli
        from otseg_hf.convert.checkpoint import main

    reference = build_reference_state_dict()
    embeds_path = world.fresh("embeds").with_suffix(".npy")
    np.save(embeds_path, random_text_embeds(20).numpy())

    def convert(state=None, raw: bytes | None = None, extra=(), embeds=embeds_path):
        def run():
            path = world.fresh("ckpt").with_suffix(".pth")
            if raw is not None:
                path.write_bytes(raw)
            else:
                torch.save({"meta": {"iter": 1}, "state_dict": state}, path)
            argv = ["--checkpoint", str(path), "--dataset", "voc", "--setting", "inductive", "--out",
                    str(world.fresh("converted")), "--head-dim", str(HEAD_DIM), *extra]  # fmt: skip
            if embeds is not None:
                argv += ["--text-embeddings", str(embeds)]
            return main(argv)

        return run

    nan_state = dict(reference)
    key = next(k for k in nan_state if k.startswith("decode_head"))
    nan_state[key] = torch.full_like(nan_state[key], float("nan"))
    missing = {k: v for k, v in reference.items() if k != key}
    import io
    import pickle

    class Hostile:
        def __reduce__(self):
            return (exec, ("raise SystemExit('hostile code ran')",))

    buffer = io.BytesIO()
    torch.save({"state_dict": {"x": Hostile()}}, buffer)
    nan_embeds = world.fresh("nan-embeds").with_suffix(".npy")
    bad = random_text_embeds(20).numpy()
    bad[0, 0, 0] = np.nan
    np.save(nan_embeds, bad)
    pickled_embeds = world.fresh("pickled-embeds").with_suffix(".npy")
    np.save(pickled_embeds, np.array([Hostile()], dtype=object), allow_pickle=True)
    cases = [
        ("ok", convert(reference), "result"),
        ("NaN tensor", convert(nan_state), "error"),
        ("missing key", convert(missing), "error"),
        ("hostile pickle", convert(raw=buffer.getvalue()), "error"),
        ("truncated file", convert(raw=pickle.dumps(reference)[:100]), "error"),
        ("empty file", convert(raw=b""), "error"),
        ("--head-dim 0", convert(reference, extra=("--head-dim", "0")), "error"),
        ("--head-dim 7", convert(reference, extra=("--head-dim", "7")), "error"),
        ("NaN text embeddings", convert(reference, embeds=nan_embeds), "error"),
        ("pickled text embeddings", convert(reference, embeds=pickled_embeds), "error"),
        ("seen ids out of range", convert(reference, extra=("--seen-label-ids", "0", "99")), "error"),
        ("template without slot", convert(reference, extra=("--prompt-templates", "a photo")), "error"),
    ]
    return [Case("converter", name, run, expect) for name, run, expect in cases]


def training_cases(world: World) -> list[Case]:
    from training.evaluate import main as evaluate
    from training.train import main as train

    tiny = ["--recipe", "otseg-synthetic-inductive", "--num-train-images", "4", "--num-eval-images", "2",
            "--per-device-batch-size", "2", "--total-batch-size", "2", "--max-steps", "1", "--cpu",
            "--checkpointing-steps", "0", "--eval-split", "none", "--no-save-model"]  # fmt: skip

    def trains(*extra):
        return lambda: train([*tiny, "--output-dir", str(world.fresh("run")), *extra])

    non_empty = world.fresh("run")
    non_empty.mkdir()
    (non_empty / "old.txt").write_text("old run")
    evaluation = ["--model", str(world.folder), "--dataset", "synthetic", "--num-images", "2", "--cpu"]

    def evaluates(*extra):
        return lambda: evaluate([*evaluation, "--output", str(world.fresh("eval").with_suffix(".json")), *extra])

    cases = [
        ("train: --max-steps 0", trains("--max-steps", "0"), "error"),
        ("train: --logging-steps 0", trains("--logging-steps", "0"), "error"),
        ("train: --num-train-images 0", trains("--num-train-images", "0"), "error"),
        ("train: batch larger than data", trains("--per-device-batch-size", "8", "--total-batch-size", "8"),
         "error"),
        ("train: --learning-rate nan", trains("--learning-rate", "nan"), "error"),
        ("train: --model-override nosuchfield=1", trains("--model-override", "nosuchfield=1"), "error"),
        ("train: non-empty --output-dir",
         lambda: train([*tiny, "--output-dir", str(non_empty)]), "error"),
        ("train: --resume latest without checkpoints", trains("--resume", "latest"), "error"),
        ("train: --max-eval-images 0", trains("--max-eval-images", "0"), "error"),
        ("evaluate: --window-size 0", evaluates("--window-size", "0"), "error"),
        ("evaluate: --stride 0", evaluates("--stride", "0"), "error"),
        ("evaluate: --stride > window", evaluates("--window-size", "8", "--stride", "1000"), "error"),
        ("evaluate: --max-images 0", evaluates("--max-images", "0"), "error"),
        ("evaluate: --model missing", lambda: evaluate(["--model", str(world.tmp / "nothing"), "--dataset",
                                                        "synthetic", "--cpu"]), "error"),
        ("evaluate: --model CLIP", lambda: evaluate(["--model", str(world.clip_dir), "--dataset", "synthetic",
                                                     "--cpu"]), "error"),
        ("evaluate: --output a folder", lambda: evaluate([*evaluation, "--output", str(world.tmp)]), "error"),
    ]  # fmt: skip
    return [Case("train.py / evaluate.py", name, run, expect) for name, run, expect in cases]


SURFACES = {
    "image processor": image_processor_cases,
    "processor": processor_cases,
    "config": config_cases,
    "forward": forward_cases,
    "pipelines": pipeline_cases,
    "folder loading": folder_cases,
    "converter": converter_cases,
    "otseg-segment": cli_cases,
    "train.py / evaluate.py": training_cases,
}


def all_cases(world: World, surfaces=None) -> list[Case]:
    cases = []
    for name, build in SURFACES.items():
        if surfaces is None or name in surfaces:
            cases.extend(build(world))
    return cases
