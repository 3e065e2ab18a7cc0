"""Hub-ready folders: contents, model card metadata, loading back, and upload against a local stand-in of the
Hub behind huggingface_hub's HTTP client (no network)."""

from __future__ import annotations

import base64
import json
import re

import httpx2
import huggingface_hub
import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, SEEN_LABEL_IDS, TINY_OVERRIDES
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils._http import default_client_factory
from transformers import pipeline

from otseg_hf import (
    OTSegForSemanticSegmentation,
    OTSegImageProcessor,
    OTSegImageSegmentationPipeline,
    OTSegZeroShotImageSegmentationPipeline,
)
from otseg_hf.cli.export import main
from otseg_hf.hub import check_eval_results, model_card, push_otseg_folder, save_otseg_folder

RESULTS = {
    "dataset_name": "PASCAL VOC 2012",
    "dataset_type": "pascal_voc",
    "dataset_split": "val",
    "miou_seen": 80.0,
    "miou_unseen": 60.0,
}


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    torch.manual_seed(0)
    return OTSegForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, image_size=32, **TINY_OVERRIDES
    ).eval()


@pytest.fixture(scope="module")
def folder(model, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("hub-folder")
    save_otseg_folder(
        model,
        path,
        tokenizer=tokenizer,
        image_processor=OTSegImageProcessor(size={"shortest_edge": 32, "longest_edge": 96}, size_divisor=8),
        eval_results=RESULTS,
        repo_id="me/otseg-tiny",
        datasets=["nateraw/pascal-voc-2012"],
        base_model="openai/clip-vit-base-patch16",
    )
    return path


def test_folder_contents(folder):
    files = {path.name for path in folder.iterdir()}
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "configuration_otseg.py",
        "modeling_otseg.py",
        "image_processing_otseg.py",
        "processing_otseg.py",
        "pipeline_otseg.py",
        "sliding_window.py",
    }
    assert expected <= files
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["auto_map"]["AutoModelForSemanticSegmentation"]
        == "modeling_otseg.OTSegForSemanticSegmentation"
    )
    assert config["custom_pipelines"]["zero-shot-image-segmentation"] == {
        "impl": "pipeline_otseg.OTSegZeroShotImageSegmentationPipeline",
        "pt": ["AutoModelForSemanticSegmentation"],
    }
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_otseg.OTSegImageProcessor"}
    assert preprocessor["size"] == {"shortest_edge": 32, "longest_edge": 96}
    assert json.loads((folder / "processor_config.json").read_text())["prompt_templates"] == list(
        OTSegForSemanticSegmentation.config_class().prompt_templates
    )
    for code in folder.glob("*.py"):  # remote code: relative imports among the package's modules only
        assert not re.search(r"^\s*(from|import)\s+otseg_hf", code.read_text(), flags=re.MULTILINE), code.name


def test_card_metadata_parses_and_validates(folder):
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-segmentation"
    assert data.license == "apache-2.0" and data.base_model == "openai/clip-vit-base-patch16"
    assert data.datasets == ["nateraw/pascal-voc-2012"]
    assert {"otseg", "zero-shot-image-segmentation", "custom_code", "otseg-inductive"} <= set(data.tags)
    metrics = {result.metric_name: result.metric_value for result in data.eval_results}
    assert metrics == {"mIoU(S)": 80.0, "mIoU(U)": 60.0, "hIoU": 68.57}  # 2 * 80 * 60 / 140
    assert {result.dataset_split for result in data.eval_results} == {"val"}
    # the model-index round-trips through huggingface_hub's own parser and data class
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "otseg-tiny" and len(results) == 3
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()


def test_card_body(folder):
    text = (folder / "README.md").read_text()
    assert "red circle, blue square, green triangle" in text and "yellow star, striped square" in text
    assert 'pipeline("zero-shot-image-segmentation", model="me/otseg-tiny", trust_remote_code=True)' in text
    assert "| PASCAL VOC 2012 | val | 80.0 | 60.0 | 68.6 |" in text
    assert (
        "windows of\n32×32 pixels slide with stride 24" in text or "32×32 pixels slide with stride 24" in text
    )
    assert "lowered by 0.1" in text and "long side at most 96" in text
    assert "## Limitations" in text and "@inproceedings{kim2024otseg" in text


def test_cards_of_other_settings(make_model):
    transductive = model_card(make_model(transductive=True).config).content
    assert "pseudo-labelled" in transductive and "lowered by" not in transductive
    supervised = model_card(make_model(seen_label_ids=None).config).content
    assert "fully supervised" in supervised and "unseen (" not in supervised and "biased" not in supervised
    assert "No evaluation results" in supervised


def test_eval_results_are_checked():
    assert check_eval_results({**RESULTS, "hiou": 70.0})[0]["hiou"] == 70.0  # given values are kept
    with pytest.raises(ValueError, match="lacks"):
        check_eval_results({"dataset_name": "VOC", "dataset_type": "voc", "miou_seen": 1.0})
    with pytest.raises(ValueError, match="unknown keys"):
        check_eval_results({**RESULTS, "mIoU": 3.0})
    with pytest.raises(ValueError, match="percentage"):
        check_eval_results({**RESULTS, "miou_seen": 110.0})


def test_folder_loads_back_through_both_pipelines(folder):
    image = np.random.default_rng(0).integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    segmenter = pipeline(
        "image-segmentation", model=str(folder), pipeline_class=OTSegImageSegmentationPipeline
    )
    assert {s["label"] for s in segmenter(image)} <= set(CLASS_NAMES)
    assert segmenter.image_processor.size.longest_edge == 96
    zero_shot = pipeline(
        "zero-shot-image-segmentation",
        model=str(folder),
        pipeline_class=OTSegZeroShotImageSegmentationPipeline,
    )
    segments = zero_shot(image, candidate_labels=["cat", "dog"])
    assert {s["label"] for s in segments} <= {"cat", "dog"} and segments[0]["mask"].size == (28, 20)


# ----------------------------------------------------------------------------------------------------
# upload, against a stand-in of the Hub's HTTP API
# ----------------------------------------------------------------------------------------------------
class FakeHub:
    """Answers the Hub endpoints an upload uses and keeps what it received."""

    def __init__(self):
        self.requests, self.created, self.validated, self.commits = [], [], [], []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            repo = f"{body.get('organization')}/{body['name']}"
            return httpx2.Response(
                200, json={"url": f"https://huggingface.co/{repo}", "name": repo, "id": "1"}
            )
        if path == "/api/validate-yaml":
            content = json.loads(request.content)["content"]
            self.validated.append(content)
            try:
                ModelCard(content, ignore_metadata_errors=False)
            except Exception as error:  # the Hub answers 400 with the errors
                return httpx2.Response(400, json={"errors": [{"message": str(error)}]})
            return httpx2.Response(200, json={"warnings": []})
        if path.endswith("/preupload/main"):
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if path.endswith("/commit/main"):
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line]
            files = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            self.commits.append({"path": path, "header": lines[0]["value"], "files": files})
            repo = path.removeprefix("/api/models/").removesuffix("/commit/main")
            url = f"https://huggingface.co/{repo}/commit/{'a' * 40}"
            return httpx2.Response(
                200, json={"commitUrl": url, "commitOid": "a" * 40, "pullRequestUrl": None}
            )
        return httpx2.Response(404, json={"error": f"not served by the stand-in: {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    yield hub
    huggingface_hub.set_client_factory(default_client_factory)


def test_push_uploads_the_whole_folder(folder, fake_hub):
    info = push_otseg_folder(folder, "me/otseg-tiny", token="hf_test_token", private=True)
    assert info.commit_url == "https://huggingface.co/me/otseg-tiny/commit/" + "a" * 40
    assert fake_hub.created == [
        {"name": "otseg-tiny", "organization": "me", "visibility": "private", "type": "model"}
    ]
    assert fake_hub.validated == [(folder / "README.md").read_text()]
    (commit,) = fake_hub.commits
    assert commit["path"] == "/api/models/me/otseg-tiny/commit/main"
    assert commit["header"]["summary"] == "Upload OTSeg model"
    local = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert commit["files"] == local
    assert all(
        r.headers["authorization"] == "Bearer hf_test_token" for r in fake_hub.requests if r.method == "POST"
    )
    assert {r.url.host for r in fake_hub.requests} == {httpx2.URL(huggingface_hub.constants.ENDPOINT).host}


def test_push_refuses_an_incomplete_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        push_otseg_folder(tmp_path, "me/otseg-tiny", token="hf_test_token")


def test_command_line_writes_and_pushes(model, tokenizer, tmp_path, fake_hub):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([RESULTS]))
    out = tmp_path / "out"
    main([str(checkpoint), str(out), "--eval-results", str(results), "--push-to-hub", "me/otseg-cli"])
    card = ModelCard.load(out / "README.md")
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["hIoU"] == 68.57
    assert 'model="me/otseg-cli"' in card.content
    assert (out / "tokenizer.json").is_file()
    assert fake_hub.commits[0]["path"] == "/api/models/me/otseg-cli/commit/main"
    assert set(fake_hub.commits[0]["files"]) == {p.name for p in out.iterdir()}


def test_push_names_the_model_type_in_the_commit(folder, fake_hub, tmp_path):
    import shutil

    zegot = tmp_path / "zegot"
    shutil.copytree(folder, zegot)
    config = json.loads((zegot / "config.json").read_text())
    (zegot / "config.json").write_text(json.dumps({**config, "model_type": "zegot"}))
    push_otseg_folder(zegot, "me/zegot-tiny", token="hf_test_token")
    push_otseg_folder(zegot, "me/zegot-tiny", token="hf_test_token", commit_message="mine")
    assert [c["header"]["summary"] for c in fake_hub.commits] == ["Upload ZegOT model", "mine"]
