"""What importing the package and asking an entry point for `--help` cost: neither imports torch nor transformers
(issue 14), and the Auto classes and pipelines are still registered once transformers' Auto machinery loads.

Each check runs in a fresh interpreter and reads `sys.modules` at its end, so it fails as soon as a module on the
way imports torch or transformers, however fast the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
HEAVY = ("torch", "transformers")

# (name, how the entry point is started): a console script (pyproject.toml [project.scripts]), a script, a module
ENTRY_POINTS = [
    ("otseg-segment", ("script", "otseg_hf.cli.segment:cli")),
    ("otseg-export", ("script", "otseg_hf.cli.export:cli")),
    ("otseg-convert-reference", ("script", "otseg_hf.cli.convert:cli")),
    ("train.py", ("path", "training/train.py")),
    ("evaluate.py", ("path", "training/evaluate.py")),
    ("pretrain_clip.py", ("path", "training/pretrain_clip.py")),
    ("reproduce_world.py", ("path", "training/reproduce_world.py")),
    ("python -m otseg_hf.demo", ("module", "otseg_hf.demo")),
    ("python -m otseg_hf.app", ("module", "otseg_hf.app")),
]


def run_entry_point(kind: str, target: str, argv: list[str]) -> dict:
    """Start the entry point as its users do, with `argv`; its exit code, output and the heavy modules loaded."""
    script = textwrap.dedent(
        f"""
        import json, runpy, sys
        kind, target, argv = {kind!r}, {target!r}, {argv!r}
        code = 0
        try:
            if kind == "script":  # what the console script setuptools writes does
                module, function = target.split(":")
                sys.argv = [module] + argv
                getattr(__import__(module, fromlist=[function]), function)()
            elif kind == "path":  # python training/x.py: the script's folder first on sys.path
                sys.argv = [target] + argv
                sys.path.insert(0, str(__import__("pathlib").Path(target).resolve().parent))
                runpy.run_path(target, run_name="__main__")
            else:  # python -m
                sys.argv = [target] + argv
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        except SystemExit as error:
            code = error.code
        print("\\nRESULT " + json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120
    )
    assert "RESULT " in result.stdout, result.stderr[-3000:]
    found = json.loads(result.stdout.rsplit("RESULT ", 1)[1])
    return {**found, "stdout": result.stdout, "stderr": result.stderr}


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_help_imports_neither_torch_nor_transformers(entry):
    _, (kind, target) = entry
    result = run_entry_point(kind, target, ["--help"])
    assert result["code"] in (0, None), result["stderr"][-3000:]
    assert "usage:" in result["stdout"]
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_usage_error_exits_2_before_torch_loads(entry):
    _, (kind, target) = entry
    result = run_entry_point(kind, target, ["--no-such-flag"])
    assert result["code"] == 2, result["stderr"][-3000:]
    assert ": error: " in result["stderr"].strip().splitlines()[-1], result["stderr"][-3000:]
    assert result["heavy"] == [], f"a usage error imported {result['heavy']}"


@pytest.mark.parametrize(
    "kind, target, argv, message",
    [
        ("script", "otseg_hf.cli.segment:cli", ["x.png", "--model", "m", "--out", "o", "--alpha", "2"], "--alpha"),
        ("script", "otseg_hf.cli.segment:cli", ["missing.png", "--model", "m", "--out", "o"], "missing.png"),
        ("script", "otseg_hf.cli.export:cli", ["no/such/folder/x", "out"], "no such folder"),
    ],
)
def test_bad_values_of_the_console_scripts_are_one_line_before_torch_loads(kind, target, argv, message):
    result = run_entry_point(kind, target, argv)
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2 and len(lines) == 1 and message in lines[0], result["stderr"][-3000:]
    assert result["heavy"] == [], f"checking the arguments imported {result['heavy']}"


def run_python(code: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


REGISTERED = """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING
    from transformers.pipelines import PIPELINE_REGISTRY
    from otseg_hf.registration import _RegisterAfterImport
    found.update(
        configs=[name for name in ("otseg", "zegot") if name in CONFIG_MAPPING._extra_content],
        models=sorted(c.__name__ for c in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING._extra_content.values()),
        task="zero-shot-image-segmentation" in PIPELINE_REGISTRY.supported_tasks,
        finder_left=any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path),
    )
    print(json.dumps(found))
"""


def expect_registered(found: dict) -> None:
    assert found["configs"] == ["otseg", "zegot"]
    assert found["models"] == ["OTSegForSemanticSegmentation", "ZegOTForSemanticSegmentation"]
    assert found["task"] and not found["finder_left"]


def test_import_is_light_and_registers_when_transformers_auto_loads():
    found = run_python(
        textwrap.dedent(
            """
            import json, sys
            import otseg_hf
            found = {"heavy": [m for m in ("torch", "transformers") if m in sys.modules]}
            from transformers import AutoConfig  # the Auto machinery: otseg_hf registers at the end of this import
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING
            found["at_once"] = "otseg" in CONFIG_MAPPING._extra_content
            """
        )
        + textwrap.dedent(REGISTERED)
    )
    assert found["heavy"] == []
    assert found["at_once"]
    expect_registered(found)


@pytest.mark.parametrize(
    "first",
    [
        "from transformers import pipeline\nimport otseg_hf",  # transformers first: registered by the import
        "import otseg_hf.model.pipeline_otseg",  # Auto loads while pipeline_otseg is half-initialised
        "from otseg_hf import OTSegConfig",  # the lazy attribute
        "import otseg_hf.world.demo",
        "import otseg_hf\nimport accelerate\nfrom transformers import CLIPModel",
    ],
    ids=["transformers-first", "closure-module-first", "lazy-attribute", "world-demo", "accelerate-clip"],
)
def test_registration_after_any_first_import(first):
    found = run_python("import json, sys\n" + first + "\nfound = {}\n" + textwrap.dedent(REGISTERED))
    expect_registered(found)


def test_public_names_resolve_lazily_to_their_modules():
    import importlib

    import otseg_hf

    assert sorted(otseg_hf.__all__) == sorted(otseg_hf._PUBLIC)
    for name, module in otseg_hf._PUBLIC.items():
        assert getattr(otseg_hf, name) is getattr(importlib.import_module(f"otseg_hf.{module}"), name)
    assert set(otseg_hf.__all__) <= set(dir(otseg_hf))
    with pytest.raises(AttributeError, match="no_such_name"):
        otseg_hf.no_such_name  # noqa: B018


def test_light_choices_match_what_they_name():
    """The names the parsers offer (cli/choices.py) are those of the heavy modules that define the things."""
    from otseg_hf.cli import choices
    from otseg_hf.data.splits import DATASETS
    from otseg_hf.recipes import RECIPES
    from otseg_hf.world.splits import GENERATED

    assert choices.RECIPE_NAMES == tuple(sorted(RECIPES))
    assert choices.DATASET_NAMES == tuple(DATASETS)
    assert choices.GENERATED_NAMES == tuple(GENERATED)
    assert (choices.WORLD_OTSEG_DIR / "config.json").is_file() and (choices.WORLD_CLIP_DIR / "config.json").is_file()
