"""OTSeg and ZegOT for Hugging Face transformers.

`import otseg_hf` is light: it imports neither torch nor transformers. A public name (`otseg_hf.OTSegConfig`, ...)
imports its module on first use (`__getattr__`, as transformers' `_LazyModule` does), and the classes are
registered with transformers' Auto classes and pipelines as soon as transformers' Auto machinery is imported
(`otseg_hf.registration`), so `AutoModelForSemanticSegmentation.from_pretrained(folder)` and
`pipeline("zero-shot-image-segmentation", model=folder)` need no `trust_remote_code` once otseg_hf is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .registration import register_when_transformers_loads

__version__ = "0.1.0"

# public name -> the module (under otseg_hf) that defines it
_PUBLIC = {
    "OTSegConfig": "model.configuration_otseg",
    "OTSegForSemanticSegmentation": "model.modeling_otseg",
    "OTSegImageProcessor": "model.image_processing_otseg",
    "OTSegImageSegmentationPipeline": "model.pipeline_otseg",
    "OTSegPreTrainedModel": "model.modeling_otseg",
    "OTSegProcessor": "model.processing_otseg",
    "OTSegSemanticSegmenterOutput": "model.modeling_otseg",
    "OTSegSlidingWindowOutput": "model.sliding_window",
    "OTSegZeroShotImageSegmentationPipeline": "model.pipeline_otseg",
    "ZegOTConfig": "model.configuration_zegot",
    "ZegOTForSemanticSegmentation": "model.modeling_zegot",
    "ZegOTPreTrainedModel": "model.modeling_zegot",
    "ZegOTPromptLearner": "model.modeling_zegot",
    "ZegOTSemanticSegmenterOutput": "model.modeling_zegot",
    "log_sinkhorn": "model.sinkhorn",
    "sliding_window_inference": "model.sliding_window",
}

__all__ = [  # the keys of _PUBLIC (tests/test_import_cost.py checks)
    "OTSegConfig",
    "OTSegForSemanticSegmentation",
    "OTSegImageProcessor",
    "OTSegImageSegmentationPipeline",
    "OTSegPreTrainedModel",
    "OTSegProcessor",
    "OTSegSemanticSegmenterOutput",
    "OTSegSlidingWindowOutput",
    "OTSegZeroShotImageSegmentationPipeline",
    "ZegOTConfig",
    "ZegOTForSemanticSegmentation",
    "ZegOTPreTrainedModel",
    "ZegOTPromptLearner",
    "ZegOTSemanticSegmenterOutput",
    "log_sinkhorn",
    "sliding_window_inference",
]

if TYPE_CHECKING:  # what static tools see; at run time `__getattr__` imports these on first use
    from .model.configuration_otseg import OTSegConfig
    from .model.configuration_zegot import ZegOTConfig
    from .model.image_processing_otseg import OTSegImageProcessor
    from .model.modeling_otseg import (
        OTSegForSemanticSegmentation,
        OTSegPreTrainedModel,
        OTSegSemanticSegmenterOutput,
    )
    from .model.modeling_zegot import (
        ZegOTForSemanticSegmentation,
        ZegOTPreTrainedModel,
        ZegOTPromptLearner,
        ZegOTSemanticSegmenterOutput,
    )
    from .model.pipeline_otseg import OTSegImageSegmentationPipeline, OTSegZeroShotImageSegmentationPipeline
    from .model.processing_otseg import OTSegProcessor
    from .model.sinkhorn import log_sinkhorn
    from .model.sliding_window import OTSegSlidingWindowOutput, sliding_window_inference


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


register_when_transformers_loads()
